"""Reading and writing tables (CSV, Parquet) with errors that name the file."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import polars as pl

from torchkeep.data.parquet import is_parquet_dataset, open_dataset
from torchkeep.errors import DataError, StorageError

READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def as_frame(data: Any, what: str = "data") -> pl.DataFrame:
    """A polars DataFrame from a polars or pandas frame, or a dict of columns."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    if type(data).__module__.startswith("pandas"):
        names = [str(c) for c in data.columns]
        _check_unique(names, what)
        return pl.from_pandas(data)
    if isinstance(data, dict):
        return pl.DataFrame(data)
    raise DataError(f"{what}: expected a path, a polars or pandas DataFrame (got {type(data).__name__})")


def read_table(path: str, *, skip_bad_files: bool = False) -> pl.DataFrame:
    """Read a CSV or Parquet file, or a parquet dataset (a folder, glob or s3:// prefix of parquet files,
    data/parquet.py) whole; a missing, unreadable or empty file is a DataError naming it."""
    if is_parquet_dataset(path):
        return open_dataset(path, skip_bad_files=skip_bad_files).read_all(skip_bad_files=skip_bad_files)
    suffix = Path(path).suffix.lower()
    kind = READERS.get(suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported file type '{suffix or '(none)'}' (expected .csv or .parquet)")
    source: Any = path
    if path.startswith("s3://"):
        from torchkeep.storage.s3 import S3Storage

        parent, _, name = path.rpartition("/")
        try:
            source = io.BytesIO(S3Storage(parent).read(name))
        except StorageError as error:
            raise DataError(str(error)) from None
    elif not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        if kind == "csv":
            frame = pl.read_csv(source, infer_schema_length=10_000, null_values=["", "NA", "NaN", "null"])
        else:
            frame = pl.read_parquet(source)
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read as {kind}: {first}") from error
    if kind == "csv":  # polars renames a repeated header name to NAME_duplicated_N
        _check_unique([re.sub(r"_duplicated_\d+$", "", c) if re.sub(r"_duplicated_\d+$", "", c) in frame.columns
                       else c for c in frame.columns], path)
    if frame.height == 0 or frame.width == 0:
        raise DataError(f"{path}: the table is empty ({frame.height} rows, {frame.width} columns)")
    return frame


def _check_unique(names: list[str], what: str) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        shown = ", ".join(f"'{n}' ({names.count(n)} times)" for n in repeated[:5])
        raise DataError(f"{what}: column name(s) {shown} appear more than once; rename them so each column"
                        " has its own name")


def write_table(frame: pl.DataFrame, path: str) -> None:
    suffix = Path(path).suffix.lower()
    kind = READERS.get(suffix)
    if kind is None:
        raise DataError(f"{path}: unsupported output type '{suffix or '(none)'}' (expected .csv or .parquet)")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "csv":
            frame.write_csv(path)
        else:
            frame.write_parquet(path)
    except OSError as error:
        raise DataError(f"{path}: cannot write: {error.strerror or error}") from error
