"""TableSchema: how raw table columns become model tensors, fitted on the training split only.

- categorical columns (strings, booleans, low-cardinality integers, or named by the user) get a
  vocabulary ordered by training frequency; index 0 is reserved for null AND unseen values and is
  never shared with a real level;
- continuous columns are filled with the training median (plus a 0/1 missing-indicator input when
  the training split had nulls), then standardized with training mean and std. Nulls that appear
  only later are filled the same way and never change the number of inputs;
- the target is encoded per task: binary / multiclass through a label vocabulary, regression
  standardized (and returned in original units by `decode`).

`transform` is the only road from raw rows to tensors: training, evaluation, predict and serving.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
import torch

from torchkeep.data.columns import (
    CASTS,
    cast_column,
    check_finite,
    check_frame,  # noqa: F401 (re-exported: TableSchema's callers check whole frames with it)
    kind_of,
    needs_no_cast,
    sample,
    encode_continuous,
    small_codes,
    small_continuous,
)
from torchkeep.data.text import PackedText, TextColumn, Vocab, text_values
from torchkeep.errors import DataError

Task = Literal["binary", "multiclass", "regression"]
TASKS = ("binary", "multiclass", "regression")
MAX_CLASS_LEVELS_INFERRED = 20


@dataclass
class CategoricalColumn:
    name: str
    kind: str  # "string" | "integer" | "boolean": what raw values are cast to before lookup
    levels: list[Any]  # level i is encoded as i + 1
    has_nulls: bool = False  # whether the training split had nulls (index 0 was seen in training)

    @property
    def cardinality(self) -> int:
        return len(self.levels) + 1


SCALINGS = ("robust", "standard")
NUMERIC_ENCODINGS = ("ple", "none")
# A string column with a distinct value in at least this share of its non-null rows (and at least
# ID_MIN_ROWS of them) is an identifier: it cannot generalize to new rows, so it is dropped.
ID_UNIQUE_SHARE = 0.9
ID_MIN_ROWS = 20


@dataclass
class ContinuousColumn:
    name: str
    median: float
    mean: float
    std: float
    missing_indicator: bool
    # "standard": (x - mean) / std; "robust": (x - center) / scale with center the median and scale
    # IQR / 1.349 (the std of a normal column; std where the IQR is 0), then smoothly clipped to
    # (-3, 3) by z / sqrt(1 + (z / 3)^2). Schemas saved before these fields load as "standard".
    scaling: str = "standard"
    center: float = 0.0
    scale: float = 1.0
    # Piecewise-linear encoding: quantile bin edges of the training values; each bin adds one input.
    edges: list[float] | None = None

    @property
    def width(self) -> int:
        """Model inputs of this column: the scaled value, one per bin, and the missing indicator."""
        return 1 + (len(self.edges) - 1 if self.edges else 0) + self.missing_indicator


@dataclass
class TargetSpec:
    name: str
    task: str
    kind: str = "float"  # raw kind of labels: "string" | "integer" | "boolean" | "float"
    labels: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def output_size(self) -> int:
        return len(self.labels) if self.task == "multiclass" else 1


# Frames of at most this many rows (a served request, a predict call of a few rows) are encoded
# with a cached dict per column instead of polars expressions: polars costs ~0.1 ms per call
# whatever the size, which was ~2.7 ms of a one-row transform on flights. The results are the same
# (tests/data/test_table_small_frames.py compares both paths).
SMALL_FRAME_ROWS = 64


class TableSchema:
    """Column encodings fitted on a training frame; saved as JSON inside runs and bundles."""

    def __init__(
        self,
        categorical: list[CategoricalColumn],
        continuous: list[ContinuousColumn],
        target: TargetSpec | None,
        text: list[TextColumn] | None = None,
        notes: list[dict[str, str]] | None = None,
    ) -> None:
        self.categorical = categorical
        self.continuous = continuous
        self.target = target
        self.text = text or []  # text columns (data/text.py): token ids, in `transform`'s "text"
        # What fitting did to columns beyond encoding them: {"column", "action", "reason"} each
        self.notes = notes or []
        self._level_codes: dict[str, dict[Any, int]] = {}  # per categorical column, built on first use

    def _codes(self, column: CategoricalColumn) -> dict[Any, int]:
        codes = self._level_codes.get(column.name)
        if codes is None:
            codes = self._level_codes[column.name] = {level: i + 1 for i, level in enumerate(column.levels)}
        return codes

    # -- fitting --------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
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
    ) -> TableSchema:
        """Also the column hygiene a user expects: constant, all-null and identifier columns are dropped,
        numbers stored as strings are read as numbers; each is recorded in `notes` (one line a column)."""
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
        target_spec = cls._fit_target(frame, target, task, standardize_target, source)
        cat_columns: list[CategoricalColumn] = []
        cont_columns: list[ContinuousColumn] = []
        notes: list[dict[str, str]] = []
        for name in frame.columns:
            if name == target or name in drop or name in text:
                continue
            column = frame.get_column(name)
            kind = kind_of(column.dtype)
            reason = _uninformative(column, kind, frame.height, named=name in categorical)
            if reason is not None:
                notes.append({"column": name, "action": "dropped", "reason": reason})
                continue
            if kind == "string" and name not in categorical and (parsed := _as_numbers(column)) is not None:
                notes.append({"column": name, "action": "read as numbers",
                              "reason": "every non-null value is a number stored as text"})
                column, kind = parsed, "float"
            if name in categorical:
                as_categorical = True
            elif name in continuous:
                if kind not in ("integer", "float", "boolean"):
                    raise DataError(f"{source}: column '{name}' has type {column.dtype}; --continuous needs numbers")
                as_categorical = False
            elif kind is None:
                raise DataError(
                    f"{source}: column '{name}' has type {column.dtype}, which is neither categorical nor"
                    f" continuous; drop it with --drop {name} or convert it"
                )
            else:
                as_categorical = kind in ("string", "boolean") or (
                    kind == "integer" and column.n_unique() - (column.null_count() > 0) <= max_integer_levels
                )
            if as_categorical:
                cat_columns.append(cls._fit_categorical(column, kind or "string", source))
            else:
                cont_columns.append(cls._fit_continuous(column, source, scaling,
                                                        numeric_bins if numeric_encoding == "ple" else 0))
        if not cat_columns and not cont_columns and not text_columns:
            dropped = f" ({len(notes)} dropped: {sample([n['column'] for n in notes])})" if notes else ""
            raise DataError(f"{source}: no feature columns left besides the target '{target}'{dropped}")
        return cls(cat_columns, cont_columns, target_spec, text_columns, notes)

    @staticmethod
    def _fit_categorical(column: pl.Series, kind: str, source: str) -> CategoricalColumn:
        if kind == "float":
            kind = "string"  # a float column named categorical: its exact values are the levels
        values = column.cast(CASTS[kind]).drop_nulls().alias("level")
        counts = values.value_counts(sort=False, name="n").sort(["n", "level"], descending=[True, False])
        levels = counts.get_column("level").to_list()
        return CategoricalColumn(name=column.name, kind=kind, levels=levels, has_nulls=column.null_count() > 0)

    @staticmethod
    def _fit_continuous(column: pl.Series, source: str, scaling: str = "standard", bins: int = 0) -> ContinuousColumn:
        values = column.cast(pl.Float64)
        check_finite(values, column.name, source)
        present = values.drop_nulls()
        median = float(present.median())
        filled = values.fill_null(median)
        mean, std = float(filled.mean()), float(filled.std(ddof=0))
        std = std if std > 0 else 1.0  # one value and some nulls: only the missing indicator informs
        iqr = float(present.quantile(0.75, "linear") - present.quantile(0.25, "linear"))
        scale = iqr / 1.349 if iqr > 0 else std
        edges = None
        if bins > 1:
            # Quantile edges of the distinct values' distribution; fewer bins where values repeat. A column
            # of two values gains nothing from bins (its scaled value says it all).
            quantiles = np.quantile(present.to_numpy(), np.linspace(0.0, 1.0, bins + 1))
            unique = np.unique(quantiles)
            edges = [float(e) for e in unique] if len(unique) >= 3 else None
        return ContinuousColumn(column.name, median, mean, std, missing_indicator=column.null_count() > 0,
                                scaling=scaling, center=median, scale=scale, edges=edges)

    @staticmethod
    def _fit_target(frame: pl.DataFrame, name: str, task: str | None, standardize: bool, source: str) -> TargetSpec:
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
            raise DataError(f"{source}: --task regression needs a numeric target; '{name}' has type {column.dtype}")
        values = column.cast(pl.Float64)
        mean, std = (float(values.mean()), float(values.std(ddof=0))) if standardize else (0.0, 1.0)
        if not std > 0:
            raise DataError(f"{source}: target column '{name}' is constant ({mean:g}); nothing to learn")
        return TargetSpec(name=name, task="regression", kind="float", mean=mean, std=std)

    # -- transforming ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.categorical] + [c.name for c in self.continuous] + [c.name for c in self.text]

    @property
    def cardinalities(self) -> list[int]:
        return [c.cardinality for c in self.categorical]

    @property
    def n_continuous_inputs(self) -> int:
        return sum(c.width for c in self.continuous)

    def note_lines(self) -> list[str]:
        return [f"column '{n['column']}' {n['action']}: {n['reason']}" for n in self.notes]

    def transform(self, frame: pl.DataFrame, *, with_target: bool = True, source: str = "data",
                  packed_text: bool = False) -> dict[str, Any]:
        """`categorical` int64 [N, C], `continuous` float32 [N, K], with text columns `text` int32
        [N, T, max_tokens] (token ids, 0-padded; with `packed_text` a PackedText that gives such batches
        padded only to their longest text), and (with_target) `target`."""
        missing = [n for n in self.feature_names if n not in frame.columns]
        if missing:
            raise DataError(
                f"{source}: missing column(s) {sample(missing)} that the model was trained on;"
                f" found: {sample(frame.columns, 20)}"
            )
        if frame.height == 0:
            raise DataError(f"{source}: the table is empty")
        out: dict[str, Any] = {}
        codes = []
        small = frame.height <= SMALL_FRAME_ROWS
        for column in self.categorical:
            series = frame.get_column(column.name)
            if small and needs_no_cast(series.dtype, column.kind):
                codes.append(small_codes(series, self._codes(column)))
                continue
            values = cast_column(frame, column.name, column.kind, source, f"{column.kind} levels")
            lookup = values.replace_strict(
                column.levels, list(range(1, column.cardinality)), default=0, return_dtype=pl.Int64
            )
            codes.append(lookup.fill_null(0).to_numpy())
        out["categorical"] = torch.from_numpy(
            np.ascontiguousarray(np.stack(codes, axis=1)) if codes else np.zeros((frame.height, 0), np.int64)
        )
        inputs = []
        for column in self.continuous:
            fast = small_continuous(frame.get_column(column.name), column) if small else None
            if fast is not None:
                inputs.extend(fast)
                continue
            values = cast_column(frame, column.name, "float", source, "numbers")
            check_finite(values, column.name, source)
            inputs.extend(encode_continuous(values.fill_null(column.median).to_numpy(), column))
            if column.missing_indicator:
                inputs.append(values.is_null().cast(pl.Float32).to_numpy())
        out["continuous"] = torch.from_numpy(
            np.ascontiguousarray(np.stack(inputs, axis=1)) if inputs else np.zeros((frame.height, 0), np.float32)
        )
        if self.text and packed_text:
            out["text"] = PackedText(
                [c.vocab.encode_packed(text_values(frame, c.name, source), c.max_tokens) for c in self.text])
        elif self.text:
            out["text"] = torch.stack(
                [c.vocab.encode(text_values(frame, c.name, source), c.max_tokens) for c in self.text], dim=1)
        if with_target:
            out["target"] = self.encode_target(frame, source)
        return out

    def encode_target(self, frame: pl.DataFrame, source: str = "data") -> torch.Tensor:
        spec = self.target
        assert spec is not None, "schema fitted without a target"
        if spec.name not in frame.columns:
            raise DataError(f"{source}: target column '{spec.name}' not found; columns are: {', '.join(frame.columns)}")
        raw = frame.get_column(spec.name)
        if raw.null_count():
            raise DataError(f"{source}: target column '{spec.name}' has {raw.null_count()} null value(s)")
        if spec.task == "regression":
            values = cast_column(frame, spec.name, "float", source, "numbers")
            check_finite(values, spec.name, source)
            return torch.from_numpy(((values - spec.mean) / spec.std).cast(pl.Float32).to_numpy().copy())
        values = cast_column(frame, spec.name, spec.kind, source, f"{spec.kind} labels")
        codes = values.replace_strict(spec.labels, list(range(len(spec.labels))), default=-1, return_dtype=pl.Int64)
        unseen = codes == -1
        if unseen.any():
            found = values.filter(unseen).unique().to_list()
            raise DataError(
                f"{source}: target column '{spec.name}' has label(s) {sample(found)} not seen in training"
                f" (known: {sample(spec.labels, 10)})"
            )
        array = codes.to_numpy()
        if spec.task == "binary":
            return torch.from_numpy(array.astype(np.float32))
        return torch.from_numpy(array.copy())

    def decode(self, outputs: torch.Tensor) -> pl.DataFrame:
        """Model outputs -> a frame: `prediction` in original units / labels, plus class probabilities."""
        spec = self.target
        assert spec is not None, "schema fitted without a target"
        outputs = outputs.detach().float().cpu()
        if spec.task == "regression":
            values = outputs.reshape(-1).double().numpy() * spec.std + spec.mean
            return pl.DataFrame({"prediction": values})
        if spec.task == "binary":
            positive = torch.sigmoid(outputs.reshape(-1))
            probabilities = torch.stack([1 - positive, positive], dim=1)
        else:
            probabilities = torch.softmax(outputs, dim=1)
        index = probabilities.argmax(dim=1).numpy()
        labels = pl.Series("prediction", spec.labels)
        columns = {"prediction": labels.gather(index)}
        for i, label in enumerate(spec.labels):
            columns[f"probability_{label}"] = pl.Series(probabilities[:, i].numpy())
        return pl.DataFrame(columns)

    # -- persistence ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {
            "categorical": [asdict(c) for c in self.categorical],
            "continuous": [asdict(c) for c in self.continuous],
            "target": asdict(self.target) if self.target else None,
        }
        if self.text:  # only then: a schema without text columns keeps its earlier format
            data["text"] = [c.to_dict() for c in self.text]
        if self.notes:
            data["notes"] = self.notes
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TableSchema:
        return cls(
            [CategoricalColumn(**c) for c in data["categorical"]],
            [ContinuousColumn(**c) for c in data["continuous"]],
            TargetSpec(**data["target"]) if data.get("target") else None,
            [TextColumn.from_dict(c) for c in data.get("text", [])],
            data.get("notes"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> TableSchema:
        return cls.from_dict(json.loads(text))

    def describe(self) -> dict[str, Any]:
        """What raw input looks like: for validation, `/metadata` and `--help`-style summaries."""
        return {
            "columns": [
                {"name": c.name, "type": "categorical", "kind": c.kind, "levels": len(c.levels)}
                for c in self.categorical
            ]
            + [{"name": c.name, "type": "continuous", "nullable": True} for c in self.continuous]
            + [{"name": c.name, "type": "text", "vocabulary": len(c.vocab), "max_tokens": c.max_tokens}
               for c in self.text],
            "dropped": [n["column"] for n in self.notes if n["action"] == "dropped"],
            "target": self.target.name if self.target else None,
            "task": self.target.task if self.target else None,
            "labels": self.target.labels if self.target and self.target.labels else None,
        }


def _uninformative(column: pl.Series, kind: str | None, rows: int, *, named: bool) -> str | None:
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
    if kind == "string" and not named and present >= ID_MIN_ROWS and distinct >= ID_UNIQUE_SHARE * present:
        if _as_numbers(column) is None:
            return (f"{distinct:,} distinct values in {present:,} rows, an identifier that cannot generalize"
                    f" (--categorical {column.name} keeps it)")
    return None


def _as_numbers(column: pl.Series) -> pl.Series | None:
    """A string column as Float64 when every non-null value parses as a finite number, else None."""
    if column.dtype != pl.String:  # a polars Categorical / Enum says what its values are
        return None
    parsed = column.str.strip_chars().cast(pl.Float64, strict=False)
    if parsed.null_count() != column.null_count() or column.null_count() == len(column):
        return None
    if bool((parsed.is_nan() | parsed.is_infinite()).any()):
        return None
    return parsed
