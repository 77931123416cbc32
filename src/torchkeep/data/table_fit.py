"""Fitting a TableSchema's columns on the training split: which column is categorical or continuous,
the column hygiene (constant, all-null and identifier columns dropped; numbers stored as text read as
numbers), vocabularies, fill and scaling statistics, and the target's task and labels."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np
import polars as pl

from torchkeep.data.columns import CASTS, check_finite, kind_of, sample
from torchkeep.data.table_spec import (
    ID_MIN_ROWS,
    ID_RARE_COUNT,
    ID_RARE_SHARE,
    ID_UNIQUE_SHARE,
    MAX_CLASS_LEVELS_INFERRED,
    NUMERIC_ENCODINGS,
    level_count,
    min_level_count_for,
    SCALINGS,
    TASKS,
    CategoricalColumn,
    ContinuousColumn,
    TargetSpec,
)
from torchkeep.data.text import TextColumn, Vocab, text_values
from torchkeep.errors import DataError


def fit_columns(
    frame: pl.DataFrame,
    *,
    target: str,
    task: str | None = None,
    categorical: list[str] | tuple[str, ...] = (),
    continuous: list[str] | tuple[str, ...] = (),
    drop: list[str] | tuple[str, ...] = (),
    max_integer_levels: int = 32,
    standardize_target: bool = True,
    source: str = "training data",
    text: list[str] | tuple[str, ...] = (),
    max_tokens: int = 1024,
    text_ngrams: int = 1,
    min_freq: int = 1,
    max_vocab: int | None = None,
    distinct_tokens: bool = False,
    char_ngrams: int = 0,
    tokenizer: str | None = None,
    scaling: str = "standard",
    numeric_encoding: str = "none",
    numeric_bins: int = 16,
    min_level_count: int | None = 1,
    integer_levels_as_numbers: bool = False,
) -> tuple[list[CategoricalColumn], list[ContinuousColumn], TargetSpec, list[TextColumn], list[dict[str, str]]]:
    """TableSchema.fit's columns, target, text columns and notes (see TableSchema.fit)."""
    if frame.height == 0:
        raise DataError(f"{source}: the training split is empty")
    for option, names in (("--categorical", categorical), ("--continuous", continuous), ("--drop", drop),
                          ("--text-column", text)):
        unknown = [n for n in names if n not in frame.columns]
        if unknown:
            raise DataError(
                f"{source}: {option} names unknown column(s) {sample(unknown)};"
                f" columns are: {', '.join(frame.columns)}"
            )
    both = set(categorical) & set(continuous)
    if both:
        raise DataError(f"{source}: column(s) {sample(sorted(both))} are named both categorical and continuous")
    both = set(text) & (set(categorical) | set(continuous) | {target})
    if both:
        raise DataError(f"{source}: column(s) {sample(sorted(both))} are named text and also target,"
                        " categorical or continuous")
    if max_tokens < 1:
        raise DataError(f"max_tokens must be >= 1 (got {max_tokens})")
    text_columns = [
        TextColumn(name=name, max_tokens=max_tokens, vocab=Vocab.build(
            text_values(frame, name, source), ngrams=text_ngrams, min_freq=min_freq, max_size=max_vocab,
            distinct=distinct_tokens, char_ngrams=char_ngrams, tokenizer=tokenizer))
        for name in text
    ]
    for column in text_columns:
        if len(column.vocab) == 2:
            raise DataError(f"{source}: text column '{column.name}' has no word seen {min_freq} or more times;"
                            " lower --min-freq or check the column")
    if scaling not in SCALINGS:
        raise DataError(f"scaling must be one of {', '.join(SCALINGS)} (got {scaling!r})")
    if numeric_encoding not in NUMERIC_ENCODINGS:
        raise DataError(f"numeric_encoding must be one of {', '.join(NUMERIC_ENCODINGS)} (got {numeric_encoding!r})")
    target_spec = fit_target(frame, target, task, standardize_target, source)
    by_rule = min_level_count is None
    rule_count = min_level_count_for(frame.height, min_level_count)
    cat_columns: list[CategoricalColumn] = []
    cont_columns: list[ContinuousColumn] = []
    notes: list[dict[str, str]] = []
    for name in frame.columns:
        if name == target or name in drop or name in text:
            continue
        column = frame.get_column(name)
        kind = kind_of(column.dtype)
        reason = uninformative(column, kind, frame.height, named=name in categorical)
        if reason is not None:
            notes.append({"column": name, "action": "dropped", "reason": reason})
            continue
        if kind == "string" and name not in categorical and (parsed := as_numbers(column)) is not None:
            notes.append({"column": name, "action": "read as numbers",
                          "reason": "every non-null value is a number stored as text"})
            column, kind = parsed, "float"
        as_categorical = is_categorical(
            name, kind, column.dtype, lambda: column.n_unique() - (column.null_count() > 0),
            categorical=categorical, continuous=continuous, max_integer_levels=max_integer_levels, source=source)
        if as_categorical:
            distinct = column.n_unique() - (column.null_count() > 0)
            min_count, said = level_count(rule_count, by_rule, distinct, max_integer_levels)
            fitted = fit_categorical(column, kind or "string", min_count)
            rare = distinct - len(fitted.levels)
            if rare and not fitted.levels:
                notes.append({"column": name, "action": "dropped",
                              "reason": f"every level seen fewer than {min_count} times{said}"})
                continue
            if rare:
                notes.append({"column": name, "action": "rare levels merged",
                              "reason": f"{rare:,} level(s) seen fewer than {min_count} times{said} share"
                              " the unseen index"})
            cat_columns.append(fitted)
            if integer_levels_as_numbers and kind == "integer" and name not in categorical:
                # an integer column made categorical by its few levels is also a number: the embedding
                # learns each level, the number keeps their order (ordinal codes, hours, counts)
                cont_columns.append(fit_continuous(column, source, scaling,
                                                   numeric_bins if numeric_encoding.startswith("ple") else 0))
        else:
            cont_columns.append(fit_continuous(column, source, scaling,
                                                    numeric_bins if numeric_encoding.startswith("ple") else 0))
    if not cat_columns and not cont_columns and not text_columns:
        dropped = f" ({len(notes)} dropped: {sample([n['column'] for n in notes])})" if notes else ""
        raise DataError(f"{source}: no feature columns left besides the target '{target}'{dropped}")
    return cat_columns, cont_columns, target_spec, text_columns, notes


def fit_categorical(column: pl.Series, kind: str, min_count: int = 1) -> CategoricalColumn:
    """Levels by training frequency; those seen fewer than `min_count` times are left out, so they
    share index 0 with nulls and unseen levels (an embedding learned from a row or two is noise)."""
    if kind == "float":
        kind = "string"  # a float column named categorical: its exact values are the levels
    values = column.cast(CASTS[kind]).drop_nulls().alias("level")
    counts = values.value_counts(sort=False, name="n")
    return categorical_from_counts(column.name, kind, counts, column.null_count() > 0, min_count)


def categorical_from_counts(name: str, kind: str, counts: pl.DataFrame, has_nulls: bool,
                            min_count: int = 1) -> CategoricalColumn:
    """The column's levels from its value counts (`level`, `n`): by count, then by level."""
    counts = counts.sort(["n", "level"], descending=[True, False])
    kept = counts.filter(pl.col("n") >= min_count)
    levels = kept.get_column("level").to_list()
    return CategoricalColumn(name=name, kind=kind, levels=levels, has_nulls=has_nulls or kept.height < counts.height)


def is_categorical(name: str, kind: str | None, dtype: Any, distinct: Callable[[], int | None], *,
                   categorical: Collection[str], continuous: Collection[str], max_integer_levels: int,
                   source: str) -> bool:
    """The column typing rule of both fits (in memory, streamed): --categorical and --continuous first; else
    strings and booleans are categorical, and integers with at most `max_integer_levels` distinct non-null
    values (`distinct()`, asked only then; None: too many to count)."""
    if name in categorical:
        return True
    if name in continuous:
        if kind not in ("integer", "float", "boolean"):
            raise DataError(f"{source}: column '{name}' has type {dtype}; --continuous needs numbers")
        return False
    if kind is None:
        raise DataError(f"{source}: column '{name}' has type {dtype}, which is neither categorical nor continuous;"
                        f" drop it with --drop {name} or convert it")
    if kind in ("string", "boolean"):
        return True
    return kind == "integer" and (count := distinct()) is not None and count <= max_integer_levels


def fit_continuous(column: pl.Series, source: str, scaling: str = "standard", bins: int = 0) -> ContinuousColumn:
    values = column.cast(pl.Float64)
    check_finite(values, column.name, source)
    present = values.drop_nulls()
    median = float(present.median())
    filled = values.fill_null(median)
    mean, std = float(filled.mean()), float(filled.std(ddof=0))
    iqr = float(present.quantile(0.75, "linear") - present.quantile(0.25, "linear"))
    # Quantile edges of the distinct values' distribution; fewer bins where values repeat.
    quantiles = np.quantile(present.to_numpy(), np.linspace(0.0, 1.0, bins + 1)) if bins > 1 else None
    return continuous_from(column.name, median=median, mean=mean, std=std, iqr=iqr, quantiles=quantiles,
                           has_nulls=column.null_count() > 0, scaling=scaling)


def continuous_from(name: str, *, median: float, mean: float, std: float, iqr: float, quantiles: np.ndarray | None,
                    has_nulls: bool, scaling: str) -> ContinuousColumn:
    """A continuous column from its statistics (the median fills nulls; mean and std are of the filled values)."""
    std = std if std > 0 else 1.0  # one value and some nulls: only the missing indicator informs
    scale = iqr / 1.349 if iqr > 0 else std
    edges = None
    if quantiles is not None:
        unique = np.unique(quantiles)
        # A column of two values gains nothing from bins (its scaled value says it all).
        edges = [float(e) for e in unique] if len(unique) >= 3 else None
    return ContinuousColumn(name, median, mean, std, missing_indicator=has_nulls,
                            scaling=scaling, center=median, scale=scale, edges=edges)


def fit_target(frame: pl.DataFrame, name: str, task: str | None, standardize: bool, source: str) -> TargetSpec:
    if name not in frame.columns:
        raise DataError(f"{source}: target column '{name}' not found; columns are: {', '.join(frame.columns)}")
    column = frame.get_column(name)
    nulls = column.null_count()
    if nulls:
        first = int(column.is_null().arg_true()[0])
        raise DataError(
            f"{source}: target column '{name}' has {nulls} null value(s) (first at row {first});"
            " drop those rows or choose another target"
        )
    kind = kind_of(column.dtype)
    if kind is None:
        raise DataError(f"{source}: target column '{name}' has type {column.dtype}; expected labels or numbers")
    if kind == "float":
        check_finite(column, name, source)
    levels = column.unique().sort().to_list()
    mean, std = 0.0, 1.0
    if kind in ("integer", "float") and standardize:
        values = column.cast(pl.Float64)
        mean, std = float(values.mean()), float(values.std(ddof=0))
    return target_from(name, kind, column.dtype, levels, mean, std, task, source)


def target_from(name: str, kind: str, dtype: pl.DataType, levels: list[Any], mean: float, std: float,
                task: str | None, source: str) -> TargetSpec:
    """The target's task (inferred when None) and encoding from its sorted distinct values (`levels`; for a
    numeric target with too many of them to keep, any list longer than MAX_CLASS_LEVELS_INFERRED) and,
    for regression, the mean and std it is standardized with (0 and 1: not standardized)."""
    if task is None:
        if len(levels) == 2:
            task = "binary"
        elif kind in ("string", "boolean") or (kind == "integer" and len(levels) <= MAX_CLASS_LEVELS_INFERRED):
            task = "multiclass"
        else:
            task = "regression"
    if task not in TASKS:
        raise DataError(f"task must be one of {', '.join(TASKS)} (got {task!r})")
    if task in ("binary", "multiclass"):
        if len(levels) < 2:
            raise DataError(f"{source}: target column '{name}' has a single label {levels[0]!r}; nothing to learn")
        if task == "binary" and len(levels) != 2:
            raise DataError(
                f"{source}: --task binary needs exactly 2 labels in '{name}', found {len(levels)}"
                f" ({sample(levels)}); use --task multiclass"
            )
        if kind == "float":
            kind = "string" if not all(float(v).is_integer() for v in levels) else "integer"
            levels = sorted({(int(v) if kind == "integer" else str(v)) for v in levels})
        return TargetSpec(name=name, task=task, kind=kind, labels=levels)
    if kind not in ("integer", "float"):
        raise DataError(f"{source}: --task regression needs a numeric target; '{name}' has type {dtype}")
    if not std > 0:
        raise DataError(f"{source}: target column '{name}' is constant ({mean:g}); nothing to learn")
    return TargetSpec(name=name, task="regression", kind="float", mean=mean, std=std)


def uninformative(column: pl.Series, kind: str | None, rows: int, *, named: bool) -> str | None:
    """Why a feature column cannot help any model (it is dropped), or None."""
    nulls = column.null_count()
    if nulls == rows:
        return "null in every row"
    if kind is None:
        return None  # an unsupported type: fit's own error names it
    distinct = column.n_unique() - (nulls > 0)
    if distinct == 1 and nulls == 0:
        return f"the same value ({column.drop_nulls()[0]!r}) in every row"
    present = rows - nulls
    if kind != "string" or named or present < ID_MIN_ROWS or as_numbers(column) is not None:
        return None
    if distinct >= ID_UNIQUE_SHARE * present:
        return (f"{distinct:,} distinct values in {present:,} rows, an identifier that cannot generalize"
                f" (--categorical {column.name} keeps it)")
    counts = column.drop_nulls().value_counts(name="n").get_column("n")
    rare_rows = int(counts.filter(counts < ID_RARE_COUNT).sum())
    if rare_rows > ID_RARE_SHARE * present:
        return (f"{rare_rows:,} of {present:,} rows hold a value seen fewer than {ID_RARE_COUNT} times"
                f" ({distinct:,} distinct), an identifier that cannot generalize (--categorical {column.name} keeps it)")
    return None


def as_numbers(column: pl.Series) -> pl.Series | None:
    """A string column as Float64 when every non-null value parses as a finite number, else None."""
    if column.dtype != pl.String:  # a polars Categorical / Enum says what its values are
        return None
    parsed = column.str.strip_chars().cast(pl.Float64, strict=False)
    if parsed.null_count() != column.null_count() or column.null_count() == len(column):
        return None
    if bool((parsed.is_nan() | parsed.is_infinite()).any()):
        return None
    return parsed
