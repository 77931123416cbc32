"""Column-level helpers of TableSchema: dtype kinds, casts and checks with errors naming the
column, and the dict-lookup encoding of small frames (see table.SMALL_FRAME_ROWS)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from torchkeep.errors import DataError

if TYPE_CHECKING:
    from torchkeep.data.table_spec import ContinuousColumn


def kind_of(dtype: pl.DataType) -> str | None:
    if dtype == pl.Boolean:
        return "boolean"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "string"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    return None


CASTS = {"string": pl.String, "integer": pl.Int64, "boolean": pl.Boolean, "float": pl.Float64}


def sample(values: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:limit])
    return shown + (", ..." if len(values) > limit else "")


def cast_column(frame: pl.DataFrame, name: str, kind: str, source: str, expected: str) -> pl.Series:
    series = frame.get_column(name)
    if kind == "float" and series.dtype == pl.String:  # numbers stored as text (TableSchema.fit reads them so)
        series = series.str.strip_chars()
    try:
        return series.cast(CASTS[kind], strict=True)
    except (pl.exceptions.PolarsError, TypeError) as error:
        found = frame.schema[name]
        raise DataError(
            f"{source}: column '{name}' has type {found} and values that are not {expected}"
            f" ({str(error).splitlines()[0][:120]})"
        ) from None


def check_finite(values: pl.Series, name: str, source: str) -> None:
    bad = values.is_nan() | values.is_infinite()
    count = int(bad.sum() or 0)
    if count:
        first = int(bad.arg_true()[0])
        raise DataError(
            f"{source}: column '{name}' has {count} NaN/inf value(s) (first at row {first});"
            " expected finite numbers or null"
        )




def needs_no_cast(dtype: pl.DataType, kind: str) -> bool:
    """Whether a column's values need no cast to be looked up as `kind` levels."""
    match kind:
        case "string":
            return dtype == pl.String
        case "boolean":
            return dtype == pl.Boolean
        case "integer":
            return dtype.is_integer()
    return False


def small_codes(series: pl.Series, codes: dict[Any, int]) -> np.ndarray:
    return np.fromiter((codes.get(value, 0) for value in series.to_list()), np.int64, len(series))


def encode_continuous(filled: np.ndarray, column: ContinuousColumn) -> list[np.ndarray]:
    """The model inputs of one continuous column from its values (float64, nulls already filled with the
    median): the scaled value, then its piecewise-linear bins where the column has bin edges. The one
    definition, for frames of any size (TableSchema.transform) and for small frames."""
    return list(encode_continuous_block(filled, column).T)


def encode_continuous_block(filled: np.ndarray, column: ContinuousColumn) -> np.ndarray:
    """encode_continuous's inputs as one float32 [N, 1 + bins] block (written into a frame's inputs whole)."""
    if column.scaling == "robust":  # median / IQR, then smoothly clipped to (-3, 3): outliers cannot dominate
        # |z| capped first (beyond 1e6 the clip gives 3.0 either way) so that z**2 cannot overflow
        z = np.clip((filled - column.center) / column.scale, -1e6, 1e6)
        z = z / np.sqrt(1.0 + (z / 3.0) ** 2)
    else:
        z = (filled - column.mean) / column.std
    if not column.edges:
        return z.astype(np.float32)[:, None]
    edges = np.asarray(column.edges, dtype=np.float64)
    bins = len(edges) - 1
    out = np.empty((len(filled), 1 + bins), dtype=np.float32)
    out[:, 0] = z
    # Bin t holds (x - edge_t) / (edge_t+1 - edge_t) clipped to [0, 1]: 1 for every bin below x, the
    # position within x's bin, 0 above (Gorishniy et al. 2022, piecewise-linear encoding). Only x's own bin
    # is computed (rounding is monotonic, so the formula gives exactly 1 below it and 0 above it); the
    # others are filled from the bin index, several times faster than the formula on every bin.
    own = np.clip(np.searchsorted(edges, filled, side="right") - 1, 0, bins - 1)
    np.less(np.arange(bins)[None, :], own[:, None], out=out[:, 1:], casting="unsafe")
    with np.errstate(over="ignore", invalid="ignore"):  # a value near the float64 limit: inf, then clipped
        position = (filled - edges[own]) / (edges[own + 1] - edges[own])
    out[np.arange(len(filled)), 1 + own] = np.clip(position, 0.0, 1.0)
    return out


def small_continuous(series: pl.Series, column: ContinuousColumn) -> list[np.ndarray] | None:
    """The encoded column (and its missing indicator), or None for the polars path: a column that
    needs a cast, or holds NaN/inf (whose error message that path writes)."""
    if not (series.dtype.is_float() or series.dtype.is_integer()):
        return None
    values = series.to_list()
    if any(value is not None and not math.isfinite(value) for value in values):
        return None
    filled = np.array([column.median if value is None else value for value in values], dtype=np.float64)
    out = encode_continuous(filled, column)
    if column.missing_indicator:
        out.append(np.array([value is None for value in values], dtype=np.float32))
    return out


def check_frame(frame: pl.DataFrame, target: str, source: str) -> None:
    """Checks on the whole table before it is split, so that row numbers are the file's own."""
    if frame.height == 0:
        raise DataError(f"{source}: the table is empty")
    if target not in frame.columns:
        raise DataError(f"{source}: target column '{target}' not found; columns are: {', '.join(frame.columns)}")
    column = frame.get_column(target)
    if column.null_count():
        first = int(column.is_null().arg_true()[0])
        raise DataError(
            f"{source}: target column '{target}' has {column.null_count()} null value(s) (first at row {first});"
            " drop those rows or choose another target"
        )
    for name, dtype in frame.schema.items():
        if dtype.is_float():
            check_finite(frame.get_column(name), name, source)
