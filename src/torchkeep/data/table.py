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
from dataclasses import asdict
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.data.columns import (
    CASTS,
    cast_column,
    check_finite,
    check_frame,  # noqa: F401 (re-exported: TableSchema's callers check whole frames with it)
    needs_no_cast,
    sample,
    encode_continuous_block,
    small_codes,
    small_continuous,
)
from torchkeep.data.table_fit import fit_columns, fit_target
from torchkeep.data.table_spec import CategoricalColumn, ContinuousColumn, TargetSpec
from torchkeep.data.text import PackedText, TextColumn, text_values
from torchkeep.errors import DataError

__all__ = ["CategoricalColumn", "ContinuousColumn", "TableSchema", "TargetSpec", "check_frame", "fit_target"]


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
        self._level_series: dict[str, tuple[pl.Series, pl.Series]] = {}

    def _codes(self, column: CategoricalColumn) -> dict[Any, int]:
        codes = self._level_codes.get(column.name)
        if codes is None:
            codes = self._level_codes[column.name] = {level: i + 1 for i, level in enumerate(column.levels)}
        return codes

    def _lookup(self, column: CategoricalColumn) -> tuple[pl.Series, pl.Series]:
        """(levels, their codes 1..n) as polars Series, built once per column (a large vocabulary built
        from Python lists on every call cost more than the lookup itself on a streamed row group)."""
        lookup = self._level_series.get(column.name)
        if lookup is None:
            lookup = self._level_series[column.name] = (
                pl.Series(column.levels, dtype=CASTS[column.kind]),
                pl.Series(range(1, column.cardinality), dtype=pl.Int64))
        return lookup

    # -- fitting --------------------------------------------------------------------------------

    @classmethod
    def fit(cls, frame: pl.DataFrame, *, target: str, **options: Any) -> TableSchema:
        """Fitted on `frame` (the training split): column types, vocabularies, fill and scaling statistics,
        the target's task and labels. Also the column hygiene a user expects: constant, all-null and
        identifier columns are dropped, numbers stored as strings are read as numbers; each is recorded in
        `notes` (one line a column). `options` and their defaults: table_fit.fit_columns (task,
        categorical, continuous, drop, max_integer_levels, standardize_target, source, text columns and
        their vocabulary settings, scaling, numeric_encoding, numeric_bins, integer_levels_as_numbers)."""
        return cls(*fit_columns(frame, target=target, **options))

    # -- transforming ---------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        # each once: an integer column with few levels may be both categorical and continuous
        return list(dict.fromkeys([c.name for c in self.categorical] + [c.name for c in self.continuous]
                                  + [c.name for c in self.text]))

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
            levels, codes_of_levels = self._lookup(column)
            lookup = values.replace_strict(levels, codes_of_levels, default=0, return_dtype=pl.Int64)
            codes.append(lookup.fill_null(0).to_numpy())
        out["categorical"] = torch.from_numpy(
            np.ascontiguousarray(np.stack(codes, axis=1)) if codes else np.zeros((frame.height, 0), np.int64)
        )
        inputs = np.empty((frame.height, self.n_continuous_inputs), dtype=np.float32)
        position = 0
        for column in self.continuous:
            fast = small_continuous(frame.get_column(column.name), column) if small else None
            if fast is not None:
                inputs[:, position : position + len(fast)] = np.stack(fast, axis=1)
                position += len(fast)
                continue
            values = cast_column(frame, column.name, "float", source, "numbers")
            check_finite(values, column.name, source)
            block = encode_continuous_block(values.fill_null(column.median).to_numpy(), column)
            inputs[:, position : position + block.shape[1]] = block  # whole rows of the block at once
            position += block.shape[1]
            if column.missing_indicator:
                inputs[:, position] = values.is_null().to_numpy()
                position += 1
        out["continuous"] = torch.from_numpy(inputs)
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
