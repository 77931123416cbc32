"""TableSchema.fit in one streamed pass over a parquet dataset's row groups, for tables larger than memory.

Each row group is read (in threads, a few ahead) and summarized per column: row and null counts,
value counts (exact, for every column that can become categorical, up to LEVEL_CAP distinct values),
sum of squares by Chan's merge for means and standard deviations, and a quantile sketch (data/sketch.py)
for medians, IQRs and the piecewise-linear bin edges. The decisions are table_fit's own rules, on these
summaries instead of a whole column: vocabularies, counts, column typing and hygiene come out exactly as
an in-memory fit of the same rows gives them; medians, IQRs and bin edges within the sketch's stated
tolerance (exact below 32,768 values a column); means and standard deviations to float rounding.

The same pass checks every row group that is not fitted on (validation fragments): NaN/inf values and
target labels unseen in training are named before a run directory exists, and rows with a null target
are counted everywhere, so that the loader knows each fragment's rows exactly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from torchkeep.data.columns import CASTS, check_finite, kind_of, sample
from torchkeep.data.parquet import Fragment, ParquetDataset
from torchkeep.data.sketch import QuantileSketch
from torchkeep.data.table_fit import categorical_from_counts, continuous_from, is_categorical, target_from
from torchkeep.data.table_spec import (
    ID_MIN_ROWS, ID_RARE_COUNT, ID_RARE_SHARE, ID_UNIQUE_SHARE, MAX_CLASS_LEVELS_INFERRED, NUMERIC_ENCODINGS, SCALINGS,
    CategoricalColumn, ContinuousColumn, TargetSpec, level_count, min_level_count_for,
)
from torchkeep.errors import DataError

LEVEL_CAP = 1_000_000  # distinct values counted per column; a string column with more is an identifier


@dataclass
class ColumnStats:
    """What one pass keeps of one column (or of a string column's values read as numbers: `parsed`)."""

    name: str
    count_cap: int  # 0: no value counts
    numeric: bool  # moments and quantiles of the values
    level_type: Any = None  # the polars type values are counted as (CASTS of the kind levels are cast to)
    rows: int = 0
    nulls: int = 0
    counts: pl.DataFrame | None = None  # level, n
    overflow: bool = False  # more distinct values than count_cap
    n: int = 0  # present numeric values, their mean and sum of squared deviations
    mean: float = 0.0
    m2: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    sketch: QuantileSketch | None = None
    parsed: ColumnStats | None = None  # a string column while every value so far is a number

    @property
    def distinct(self) -> int:
        return self.counts.height if self.counts is not None else 0

    def merge(self, part: dict[str, Any]) -> None:
        self.rows += part["rows"]
        self.nulls += part["nulls"]
        if self.count_cap and not self.overflow and part["counts"] is not None:
            merged = part["counts"] if self.counts is None else pl.concat([self.counts, part["counts"]])
            self.counts = merged.group_by("level").agg(pl.col("n").sum())
            if self.counts.height > self.count_cap:
                self.counts, self.overflow = None, True
        values = part.get("values")
        if self.numeric and values is not None and len(values):
            n, mean = len(values), float(values.mean())
            m2 = float(((values - mean) ** 2).sum())
            total, delta = self.n + n, mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.n * n / total
            self.n = total
            self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))
            if self.sketch is None:
                self.sketch = QuantileSketch()
            self.sketch.add(values)
        if self.parsed is not None:
            if part.get("parsed") is None:
                self.parsed = None  # a value that is not a number: the column stays text
            else:
                self.parsed.merge(part["parsed"])


def summarize(series: pl.Series, stats: ColumnStats, source: str) -> dict[str, Any]:
    """One row group's summary of a column (computed in a reader thread)."""
    part: dict[str, Any] = {"rows": len(series), "nulls": series.null_count(), "counts": None}
    if stats.count_cap:
        part["counts"] = (series.cast(stats.level_type).drop_nulls().alias("level").value_counts(sort=False, name="n")
                          .with_columns(pl.col("n").cast(pl.Int64)))
    if stats.numeric:
        values = series.cast(pl.Float64)
        check_finite(values, series.name, source)
        part["values"] = values.drop_nulls().to_numpy()
    if stats.parsed is not None:
        numbers = series.str.strip_chars().cast(pl.Float64, strict=False)
        finite = not bool((numbers.is_nan() | numbers.is_infinite()).any())
        if numbers.null_count() == series.null_count() and finite:
            part["parsed"] = {"rows": len(series), "nulls": series.null_count(), "counts": None,
                              "values": numbers.drop_nulls().to_numpy()}
    return part


@dataclass
class StreamFit:
    """The fitted columns, target and notes (as table_fit.fit_columns returns them), and per fragment the
    rows that have a target (what the loaders read)."""

    categorical: list[CategoricalColumn]
    continuous: list[ContinuousColumn]
    target: TargetSpec
    notes: list[dict[str, str]]
    train_rows: list[int] = field(default_factory=list)  # per fragment fitted on, in order
    other_rows: list[int] = field(default_factory=list)  # per fragment only checked
    null_targets: int = 0


def fit_streamed(
    dataset: ParquetDataset, train: list[Fragment], others: list[Fragment], *, target: str, task: str | None = None,
    categorical: list[str] | tuple[str, ...] = (), continuous: list[str] | tuple[str, ...] = (),
    drop: list[str] | tuple[str, ...] = (), max_integer_levels: int = 32, standardize_target: bool = True,
    scaling: str = "standard", numeric_encoding: str = "none", numeric_bins: int = 16, min_level_count: int | None = 1,
    integer_levels_as_numbers: bool = False, source: str = "training data", threads: int = 2, on_progress: Callable[[int, int, int], None] | None = None,
    others_dataset: ParquetDataset | None = None,
) -> StreamFit:
    """One pass over `train` (fitted on) and `others` (checked only; fragments of `others_dataset` when given,
    a separate validation dataset). Options as in table_fit.fit_columns."""
    columns = dataset.columns
    for option, names in (("--categorical", categorical), ("--continuous", continuous), ("--drop", drop)):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise DataError(f"{source}: {option} names unknown column(s) {sample(unknown)}; columns are: {', '.join(columns)}")
    both = set(categorical) & set(continuous)
    if both:
        raise DataError(f"{source}: column(s) {sample(sorted(both))} are named both categorical and continuous")
    if scaling not in SCALINGS:
        raise DataError(f"scaling must be one of {', '.join(SCALINGS)} (got {scaling!r})")
    if numeric_encoding not in NUMERIC_ENCODINGS:
        raise DataError(f"numeric_encoding must be one of {', '.join(NUMERIC_ENCODINGS)} (got {numeric_encoding!r})")
    if target not in columns:
        raise DataError(f"{source}: target column '{target}' not found; columns are: {', '.join(columns)}")
    kinds = {name: kind_of(dtype) for name, dtype in columns.items()}
    if kinds[target] is None:
        raise DataError(f"{source}: target column '{target}' has type {columns[target]}; expected labels or numbers")
    stats = {name: _plan(name, columns[name], name in categorical, name in continuous, max_integer_levels)
             for name in columns if name != target and name not in drop}
    target_type = CASTS[kinds[target] or "string"]
    target_stats = ColumnStats(target, LEVEL_CAP, kinds[target] in ("integer", "float"), target_type)
    seen_labels = ColumnStats(target, LEVEL_CAP, False, target_type)  # labels of the fragments not fitted on
    others_dataset = others_dataset or dataset
    if others_dataset.columns != columns:
        missing = [n for n in columns if n not in others_dataset.columns]
        raise DataError(f"{others_dataset.uri}: the validation data's columns differ from the training data's"
                        f" ({'missing ' + sample(missing) if missing else 'other types or order'})")
    counted: list[int] = []
    null_targets = 0
    frames = itertools.chain(_frames(dataset, train, columns, target, threads),
                             _frames(others_dataset, others, columns, target, threads))
    for index, (fragment, frame, nulls) in enumerate(frames):
        fitted = index < len(train)
        where = f"{(dataset if fitted else others_dataset).where(fragment.file)} (row group {fragment.row_group})"
        null_targets += nulls
        counted.append(frame.height)
        for name, dtype in columns.items():  # as check_frame: every float column, whatever becomes of it
            if dtype.is_float() and name not in stats and frame.height:
                check_finite(frame.get_column(name), name, where)
        if fitted:
            for name, column in stats.items():
                column.merge(summarize(frame.get_column(name), column, where))
            target_stats.merge(summarize(frame.get_column(target), target_stats, where))
        else:
            seen_labels.merge(summarize(frame.get_column(target), seen_labels, where))
        if on_progress is not None:
            on_progress(index + 1, len(train) + len(others), sum(counted))
    if target_stats.rows == 0:
        raise DataError(f"target column '{target}' is null in every row; nothing to learn")
    spec = _target(target_stats, kinds[target] or "string", columns[target], task, standardize_target, source)
    if spec.task != "regression" and seen_labels.counts is not None:
        known = set(spec.labels)
        unseen = [v for v in seen_labels.counts.get_column("level").cast(CASTS[spec.kind]).to_list() if v not in known]
        if unseen:
            raise DataError(f"{others_dataset.uri} (validation): target column '{target}' has label(s)"
                            f" {sample(sorted(unseen, key=str))} not seen in training (known: {sample(spec.labels, 10)})")
    cats, conts, notes = _columns(stats, kinds, columns, categorical, continuous, max_integer_levels, scaling,
                                  numeric_bins if numeric_encoding.startswith("ple") else 0,
                                  min_level_count_for(sum(counted[: len(train)]), min_level_count), source,
                                  integer_levels_as_numbers, by_rule=min_level_count is None)
    if not cats and not conts:
        dropped = f" ({len(notes)} dropped: {sample([n['column'] for n in notes])})" if notes else ""
        raise DataError(f"{source}: no feature columns left besides the target '{target}'{dropped}")
    return StreamFit(cats, conts, spec, notes, counted[: len(train)], counted[len(train) :], null_targets)


def _plan(name: str, dtype: Any, named_categorical: bool, named_continuous: bool,
          max_integer_levels: int) -> ColumnStats:
    """What to keep of a column: counts where it may become categorical, numbers where continuous."""
    kind = kind_of(dtype)
    if named_categorical or kind in ("string", "boolean"):
        cap = LEVEL_CAP
    elif kind == "integer" and not named_continuous:
        cap = max(max_integer_levels, 1) + 1  # enough to tell categorical from continuous, and constant
    else:
        cap = 0
    numeric = not named_categorical and (kind in ("integer", "float") or (kind == "boolean" and named_continuous))
    stats = ColumnStats(name, cap, numeric, CASTS["string" if kind in (None, "float") else kind])
    if dtype == pl.String and not named_categorical:  # numbers stored as text (a polars Categorical is not)
        stats.parsed = ColumnStats(name, 0, True)
    return stats


def _frames(dataset: ParquetDataset, fragments: list[Fragment], columns: dict[str, Any], target: str,
            threads: int) -> Iterator[tuple[Fragment, pl.DataFrame, int]]:
    """(fragment, its rows that have a target, how many had none), in order, read `threads` at a time."""

    def read(fragment: Fragment) -> tuple[pl.DataFrame, int]:
        frame = dataset.read_fragment(fragment, list(columns))
        nulls = frame.get_column(target).null_count()
        return (frame.filter(pl.col(target).is_not_null()) if nulls else frame), nulls

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="torchkeep-fit") as pool:
        pending: list[tuple[Fragment, Future[tuple[pl.DataFrame, int]]]] = []
        queue = iter(fragments)
        for fragment in queue:
            pending.append((fragment, pool.submit(read, fragment)))
            if len(pending) >= 2 * threads:
                break
        while pending:
            fragment, future = pending.pop(0)
            frame, nulls = future.result()
            following = next(queue, None)
            if following is not None:
                pending.append((following, pool.submit(read, following)))
            yield fragment, frame, nulls


def _target(stats: ColumnStats, kind: str, dtype: Any, task: str | None, standardize: bool, source: str) -> TargetSpec:
    if stats.overflow:  # more distinct values than can be labels
        if kind not in ("integer", "float") or task in ("binary", "multiclass"):
            raise DataError(f"{source}: target column '{stats.name}' has more than {LEVEL_CAP:,} distinct values;"
                            " too many to be labels")
        levels: list[Any] = list(range(MAX_CLASS_LEVELS_INFERRED + 3))  # only their number matters here
    else:
        assert stats.counts is not None
        levels = stats.counts.get_column("level").sort().to_list()
    mean, std = 0.0, 1.0
    if kind in ("integer", "float") and standardize:
        mean, std = stats.mean, float(np.sqrt(stats.m2 / stats.n))
    return target_from(stats.name, kind, dtype, levels, mean, std, task, source)


def _columns(stats: dict[str, ColumnStats], kinds: dict[str, str | None], columns: dict[str, Any],
             categorical: Any, continuous: Any, max_integer_levels: int, scaling: str, bins: int, min_count: int,
             source: str, integer_levels_as_numbers: bool = False, *, by_rule: bool = False,
             ) -> tuple[list[CategoricalColumn], list[ContinuousColumn], list[dict[str, str]]]:
    """table_fit.fit_columns' loop over the columns, on their summaries."""
    cats: list[CategoricalColumn] = []
    conts: list[ContinuousColumn] = []
    notes: list[dict[str, str]] = []
    for name, column in stats.items():
        kind = kinds[name]
        reason = _uninformative(column, kind, named=name in categorical)
        if reason is not None:
            notes.append({"column": name, "action": "dropped", "reason": reason})
            continue
        if kind == "string" and name not in categorical and column.parsed is not None and column.parsed.n:
            notes.append({"column": name, "action": "read as numbers",
                          "reason": "every non-null value is a number stored as text"})
            column, kind = column.parsed, "float"
        as_categorical = is_categorical(
            name, kind, columns[name], lambda: None if column.overflow else column.distinct,
            categorical=categorical, continuous=continuous, max_integer_levels=max_integer_levels, source=source)
        if as_categorical:
            if column.overflow or column.counts is None:
                raise DataError(f"{source}: column '{name}' has more than {LEVEL_CAP:,} distinct values, too many"
                                " levels to embed; leave it out with --drop")
            kind = "string" if kind in (None, "float") else kind
            count, said = level_count(min_count, by_rule, column.distinct, max_integer_levels)
            fitted = categorical_from_counts(name, kind, column.counts, column.nulls > 0, count)
            rare = column.distinct - len(fitted.levels)
            if rare and not fitted.levels:
                notes.append({"column": name, "action": "dropped",
                              "reason": f"every level seen fewer than {count} times{said}"})
                continue
            if rare:
                notes.append({"column": name, "action": "rare levels merged",
                              "reason": f"{rare:,} level(s) seen fewer than {count} times{said} share the unseen"
                              " index"})
            cats.append(fitted)
            if integer_levels_as_numbers and kind == "integer" and name not in categorical and column.sketch is not None:
                conts.append(_continuous(column, scaling, bins))  # as table_fit: also a number
        else:
            conts.append(_continuous(column, scaling, bins))
    return cats, conts, notes


def _continuous(column: ColumnStats, scaling: str, bins: int) -> ContinuousColumn:
    assert column.sketch is not None
    quartiles = column.sketch.quantiles([0.25, 0.5, 0.75])
    median = float(quartiles[1])
    rows = column.n + column.nulls  # nulls filled with the median: Chan's merge with nulls x median
    mean = column.mean + (median - column.mean) * column.nulls / rows
    m2 = column.m2 + (median - column.mean) ** 2 * column.n * column.nulls / rows
    quantiles = column.sketch.quantiles(np.linspace(0.0, 1.0, bins + 1)) if bins > 1 else None
    return continuous_from(column.name, median=median, mean=mean, std=float(np.sqrt(m2 / rows)),
                           iqr=float(quartiles[2] - quartiles[0]), quantiles=quantiles, has_nulls=column.nulls > 0,
                           scaling=scaling)


def _uninformative(column: ColumnStats, kind: str | None, *, named: bool) -> str | None:
    """table_fit.uninformative on a column's summary."""
    if column.nulls == column.rows:
        return "null in every row"
    if kind is None:
        return None
    if column.counts is not None:
        constant = column.distinct == 1
        value = column.counts.get_column("level")[0] if constant else None
    else:
        constant = column.numeric and not column.overflow and column.low == column.high
        value = column.low
        if constant and kind == "integer":
            value = int(value)
    if constant and column.nulls == 0:
        return f"the same value ({value!r}) in every row"
    present = column.rows - column.nulls
    numbers = column.parsed is not None and column.parsed.n > 0
    if kind != "string" or named or present < ID_MIN_ROWS or numbers:
        return None
    if column.overflow:
        return (f"more than {LEVEL_CAP:,} distinct values in {present:,} rows, an identifier that cannot generalize"
                f" (--categorical {column.name} keeps it)")
    assert column.counts is not None
    distinct = column.distinct
    if distinct >= ID_UNIQUE_SHARE * present:
        return (f"{distinct:,} distinct values in {present:,} rows, an identifier that cannot generalize"
                f" (--categorical {column.name} keeps it)")
    counts = column.counts.get_column("n")
    rare_rows = int(counts.filter(counts < ID_RARE_COUNT).sum())
    if rare_rows > ID_RARE_SHARE * present:
        return (f"{rare_rows:,} of {present:,} rows hold a value seen fewer than {ID_RARE_COUNT} times"
                f" ({distinct:,} distinct), an identifier that cannot generalize (--categorical {column.name} keeps it)")
    return None


def progress_lines(report: Callable[[str], None], every_s: float = 5.0) -> Callable[[int, int, int], None]:
    """An `on_progress` that reports a line at most every `every_s` seconds, and at the end."""
    started, last = time.perf_counter(), [0.0]

    def on_progress(done: int, total: int, rows: int) -> None:
        now = time.perf_counter()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            report(f"fitting the schema: {done:,}/{total:,} row groups, {rows:,} rows, {now - started:.1f} s")

    return on_progress
