"""Table rows as JSON gives them (dicts of None / bool / int / float / str) -> model tensors, and model
outputs -> JSON records, without a polars frame for a few rows.

`TableSchema.transform` stays the one definition. `rows_frame` is the one road from rows to a frame,
so `TableSchema.transform(rows_frame(rows, schema))` is what rows mean; `TableRows.encode` computes the
same tensors straight from the rows for small batches (a served request, a predict call of a few rows):
dict lookups for vocabularies, the fitted fill, scaling and bin edges as arrays, one preallocated array
per input. Values are "plain" when their meaning does not depend on the other rows: null, a string in
a string or text column, a boolean in a boolean column, a 64-bit integer (or an integral float within
2**53) in an integer column, a number within the float range in a continuous one. A column of plain
values gets its kind's dtype in `rows_frame` (an integer column stays Int64 whatever the other rows
hold); any other value (a string in a numeric column, a boolean as a number, NaN, ...) leaves its
column to polars' type inference, and `encode` answers None: `TableRows.transform` then takes the
frame road, so both give identical tensors or identical errors by construction.
tests/data/test_table_rows.py checks it on generated tables (hypothesis).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.data.table import TableSchema
from torchkeep.data.table_spec import TargetSpec
from torchkeep.data.text import MAX_TEXT_CHARS, PackedText
from torchkeep.errors import DataError

# Batches of at most this many rows are encoded by TableRows.encode, larger ones through a frame, whose
# polars operations cost ~0.1 ms each whatever the size, while this loop costs a few µs a row. Measured on
# the flights example (2 busy cores): 1 row 46 µs vs 506, 64 rows 0.24 vs 0.65 ms, 1,000 rows 7.4 vs 19 ms.
FAST_PATH_ROWS = 1024
PLAIN_PYTHON_ROWS = 4  # up to this many rows, continuous inputs are computed in Python floats, not numpy
EXACT_INT = 2**53  # integral floats up to this are exact integers
INT64 = 2**63
FLOAT_MAX = sys.float_info.max
DTYPES = {"string": pl.String, "integer": pl.Int64, "boolean": pl.Boolean, "float": pl.Float64, "text": pl.String}


def plain_value(kind: str, value: Any) -> tuple[bool, Any]:
    """(whether `value` is plain for a column of `kind`, the value its typed column holds)."""
    kind_of_value = type(value)
    if value is None:
        return True, None
    if kind in ("string", "text"):
        return kind_of_value is str and _plain_string(value), value
    if kind == "boolean":
        return kind_of_value is bool, value
    if kind == "integer":
        if kind_of_value is float and value.is_integer() and -EXACT_INT <= value <= EXACT_INT:
            return True, int(value)
        return kind_of_value is int and -INT64 <= value < INT64, value
    if kind_of_value is int and -FLOAT_MAX <= value <= FLOAT_MAX:
        return True, float(value)
    return kind_of_value is float and math.isfinite(value), value


def column_kinds(schema: TableSchema) -> list[tuple[str, str]]:
    """(name, kind) of each feature column once; a column both categorical and continuous (an integer
    with few levels) as its categorical kind, which the continuous encoding reads as numbers too."""
    kinds = ([(c.name, c.kind) for c in schema.categorical] + [(c.name, "float") for c in schema.continuous]
             + [(c.name, "text") for c in schema.text])
    first: dict[str, str] = {}
    for name, kind in kinds:
        first.setdefault(name, kind)
    return list(first.items())


def rows_frame(rows: Sequence[dict[str, Any]], schema: TableSchema, source: str = "rows") -> pl.DataFrame:
    """The frame of JSON-like rows: one column per feature that some row holds (null where a row lacks
    it), of its kind's dtype where every value is plain, else of the type polars infers from the values.
    A feature no row holds is left out, for `transform` to name."""
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{source}: row {index} is a {type(row).__name__}; expected an object of column values")
    columns = []
    for name, kind in column_kinds(schema):
        if not any(name in row for row in rows):
            continue
        checked = [plain_value(kind, row.get(name)) for row in rows]
        try:
            if all(plain for plain, _ in checked):
                columns.append(pl.Series(name, [value for _, value in checked], dtype=DTYPES[kind]))
            else:
                columns.append(pl.Series(name, [row.get(name) for row in rows], strict=False))
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as error:
            message = str(error).splitlines()[0][:120]
            raise DataError(f"{source}: column '{name}' has values of types that do not fit one column ({message})") from None
    return pl.DataFrame(columns)


def _plain_string(value: Any) -> bool:
    # JSON allows "\ud800" (a lone surrogate), which has no UTF-8 form: a frame cannot hold it
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class TableRows:
    """A TableSchema's transform for rows (dicts), derived from the fitted schema once."""

    def __init__(self, schema: TableSchema) -> None:
        self.schema = schema
        self.names = schema.feature_names
        self.categorical = [(c.name, c.kind, {level: i + 1 for i, level in enumerate(c.levels)})
                            for c in schema.categorical]
        continuous = schema.continuous
        self.continuous = [(c.name, c.median) for c in continuous]
        self.width = sum(c.width for c in continuous)
        robust = [i for i, c in enumerate(continuous) if c.scaling == "robust"]
        standard = [i for i, c in enumerate(continuous) if c.scaling != "robust"]
        self.robust = (np.array(robust, np.int64), np.array([continuous[i].center for i in robust]),
                       np.array([continuous[i].scale for i in robust]))
        self.standard = (np.array(standard, np.int64), np.array([continuous[i].mean for i in standard]),
                         np.array([continuous[i].std for i in standard]))
        # Where each input goes: the scaled value, its bins, its missing indicator (encode_continuous's order)
        scaled, bin_column, lefts, widths, bin_position, indicator, indicator_position = [], [], [], [], [], [], []
        position = 0
        for i, column in enumerate(continuous):
            scaled.append(position)
            position += 1
            if column.edges:
                edges = np.asarray(column.edges, dtype=np.float64)
                bins = len(edges) - 1
                bin_column += [i] * bins
                lefts.append(edges[:-1])
                widths.append(np.diff(edges))
                bin_position += range(position, position + bins)
                position += bins
            if column.missing_indicator:
                indicator.append(i)
                indicator_position.append(position)
                position += 1
        self.scaled_position = np.array(scaled, np.int64)
        self.bin_column, self.bin_position = np.array(bin_column, np.int64), np.array(bin_position, np.int64)
        self.lefts = np.concatenate(lefts) if lefts else np.zeros(0)
        self.widths = np.concatenate(widths) if widths else np.zeros(0)
        self.indicator, self.indicator_position = np.array(indicator, np.int64), np.array(indicator_position, np.int64)
        self.text = [(c.name, c.vocab, c.max_tokens) for c in schema.text]
        # Per column for a few rows in plain Python (_continuous_rows): scaling, bin edges, indicator
        self.plan = [(c.scaling == "robust", c.center, c.scale, c.mean, c.std,
                      list(zip(c.edges[:-1], np.diff(np.asarray(c.edges, np.float64)).tolist())) if c.edges else [],
                      c.missing_indicator) for c in continuous]

    def transform(self, rows: Sequence[dict[str, Any]], *, source: str = "rows", packed_text: bool = False) -> dict[str, Any]:
        """`TableSchema.transform(rows_frame(rows), with_target=False)`, without the frame when it can."""
        encoded = self.encode(rows, packed_text=packed_text) if len(rows) <= FAST_PATH_ROWS else None
        if encoded is not None:
            return encoded
        return self.schema.transform(rows_frame(rows, self.schema, source), with_target=False, source=source,
                                     packed_text=packed_text)

    def encode(self, rows: Sequence[dict[str, Any]], *, packed_text: bool = False) -> dict[str, Any] | None:
        """The tensors of `transform`, or None where a value is not plain (the frame road decides)."""
        count = len(rows)
        if count == 0:
            return None
        codes = np.zeros((count, len(self.categorical)), np.int64)  # 0: null and unseen
        values = np.empty((count, len(self.continuous)), np.float64)
        missing = np.zeros((count, len(self.continuous)), np.bool_)
        texts: list[list[str | None]] = [[] for _ in self.text]
        try:
            for r, row in enumerate(rows):
                for c, (name, kind, lookup) in enumerate(self.categorical):
                    value = row[name]
                    if value is None:
                        continue
                    kind_of_value = type(value)
                    if kind == "string" and kind_of_value is str and _plain_string(value):
                        codes[r, c] = lookup.get(value, 0)
                    elif kind == "integer" and kind_of_value is int and -INT64 <= value < INT64:
                        codes[r, c] = lookup.get(value, 0)
                    elif kind == "integer" and kind_of_value is float and value.is_integer() \
                            and -EXACT_INT <= value <= EXACT_INT:
                        codes[r, c] = lookup.get(int(value), 0)
                    elif kind == "boolean" and kind_of_value is bool:
                        codes[r, c] = lookup.get(value, 0)
                    else:
                        return None
                for c, (name, median) in enumerate(self.continuous):
                    value = row[name]
                    kind_of_value = type(value)
                    if value is None:
                        values[r, c], missing[r, c] = median, True
                    elif kind_of_value is float and math.isfinite(value):
                        values[r, c] = value
                    elif kind_of_value is int and -FLOAT_MAX <= value <= FLOAT_MAX:
                        values[r, c] = float(value)
                    else:
                        return None
                for t, (name, _, _) in enumerate(self.text):
                    value = row[name]
                    if value is not None and not (type(value) is str and _plain_string(value)):
                        return None
                    texts[t].append(value)
        except (KeyError, TypeError):  # a row without a column (or not a dict): null there, or missing everywhere (the frame road says which)
            return None
        if count <= PLAIN_PYTHON_ROWS:  # a request's row or few: no numpy (fewer library calls cost less)
            continuous = torch.tensor(self._continuous_rows(values.tolist(), missing.tolist()), dtype=torch.float32)
            continuous = continuous.reshape(count, self.width)
        else:
            continuous = torch.from_numpy(self._continuous(values, missing))
        out: dict[str, Any] = {"categorical": torch.from_numpy(codes), "continuous": continuous}
        if self.text:
            series = [pl.Series(name, column, dtype=pl.String) for (name, _, _), column in zip(self.text, texts)]
            if packed_text:
                out["text"] = PackedText([vocab.encode_packed(s, tokens) for s, (_, vocab, tokens) in zip(series, self.text)])
            else:
                out["text"] = torch.stack([vocab.encode(s, tokens) for s, (_, vocab, tokens) in zip(series, self.text)], dim=1)
        return out

    def _continuous(self, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """data.columns.encode_continuous for every column at once: the same operations on the same
        float64 values, element by element, so the same float32 results."""
        out = np.empty((len(values), self.width), np.float32)
        scaled = np.empty_like(values)
        index, center, scale = self.robust
        if len(index):
            z = np.clip((values[:, index] - center) / scale, -1e6, 1e6)
            scaled[:, index] = z / np.sqrt(1.0 + (z / 3.0) ** 2)
        index, mean, std = self.standard
        if len(index):
            scaled[:, index] = (values[:, index] - mean) / std
        out[:, self.scaled_position] = scaled.astype(np.float32)
        if len(self.bin_column):
            with np.errstate(over="ignore", invalid="ignore"):
                bins = (values[:, self.bin_column] - self.lefts) / self.widths
            out[:, self.bin_position] = np.clip(bins, 0.0, 1.0).astype(np.float32)
        if len(self.indicator):
            out[:, self.indicator_position] = missing[:, self.indicator]
        return out


    def _continuous_rows(self, values: list[list[float]], missing: list[list[bool]]) -> list[list[float]]:
        """`_continuous` in plain Python floats: the same float64 operations in the same order (x * x for
        numpy's ** 2; sqrt and division are correctly rounded in both), rounded to float32 by torch.tensor
        as by numpy's astype: the same tensors."""
        out = []
        for row_values, row_missing in zip(values, missing):
            row: list[float] = []
            for (robust, center, scale, mean, std, bins, indicator), value, gone in zip(self.plan, row_values, row_missing):
                if robust:
                    z = min(max((value - center) / scale, -1e6), 1e6)
                    row.append(z / math.sqrt(1.0 + (z / 3.0) * (z / 3.0)))
                else:
                    row.append((value - mean) / std)
                for left, width in bins:
                    position = (value - left) / width
                    row.append(0.0 if position < 0.0 else 1.0 if position > 1.0 else position)
                if indicator:
                    row.append(1.0 if gone else 0.0)
            out.append(row)
        return out


def text_problem(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bool:
    """Whether a text column of these rows holds something `check_texts` refuses (null, no word, too long)
    or that is not a plain string: then the frame road gives its error."""
    for row in rows:
        for name in names:
            value = row.get(name)
            # Python's whitespace is a superset of polars' (Rust's): a text with a non-space here has one there
            if type(value) is not str or len(value) > MAX_TEXT_CHARS or not value.strip():
                return True
    return False


def frame_records(predictions: pl.DataFrame) -> list[dict[str, Any] | None]:
    """Decoded predictions (`schema.decode`) as JSON objects: prediction, plus probabilities per label.

    None for a row whose output is not finite (inputs so extreme that float32 overflows): JSON
    cannot carry NaN, and a server answers 422 for that row instead of failing to encode."""
    labels = [c.removeprefix("probability_") for c in predictions.columns if c.startswith("probability_")]
    values = predictions.get_column("prediction").to_list()
    if not labels:  # regression: the prediction is the number
        return [{"prediction": value} if math.isfinite(value) else None for value in values]
    probabilities = zip(*(predictions.get_column(f"probability_{label}").to_list() for label in labels))
    return [{"prediction": value, "probabilities": dict(zip(labels, row))} if all(map(math.isfinite, row)) else None
            for value, row in zip(values, probabilities)]


def output_records(target: TargetSpec, outputs: torch.Tensor) -> list[dict[str, Any] | None]:
    """`frame_records(TableSchema.decode(outputs))` without the frame: the same numbers (tests/data)."""
    outputs = outputs.detach().float().cpu()
    if target.task == "regression":
        values = (outputs.reshape(-1).double().numpy() * target.std + target.mean).tolist()
        return [{"prediction": value} if math.isfinite(value) else None for value in values]
    names = [str(label) for label in target.labels]
    if target.task == "binary":  # decode's [1 - p, p] and its argmax (the first on a tie), in fewer operations
        positive = torch.sigmoid(outputs.reshape(-1))
        return [{"prediction": target.labels[1 if yes > no else 0], "probabilities": dict(zip(names, (no, yes)))}
                if math.isfinite(no) and math.isfinite(yes) else None
                for no, yes in zip((1 - positive).tolist(), positive.tolist())]
    probabilities = torch.softmax(outputs, dim=1)
    index = probabilities.argmax(dim=1).tolist()
    return [{"prediction": target.labels[i], "probabilities": dict(zip(names, row))} if all(map(math.isfinite, row))
            else None for i, row in zip(index, probabilities.tolist())]
