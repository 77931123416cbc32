"""Parquet datasets: a directory, a glob or an `s3://` prefix of parquet files, read as one table.

Files are found once, in sorted order; `key=value` folders (hive partitions) become columns. Every
file's footer is read up front (in threads, a ranged GET each on S3): the files must agree on their
columns and types, a file that is not parquet is named (or left out and counted with
`skip_bad_files`), and the row groups become the dataset's fragments, the units a streamed run
shuffles and reads. The footers' uncompressed sizes say whether the table fits in memory.

Local files are read by path; `s3://` through the storage layer (storage/s3.py: boto3, the standard
AWS configuration, retries), one ranged GET per footer or column chunk, so memory holds what is
being decoded and never a whole file. Needs pyarrow (`pip install 'torchkeep[parquet]'`).
"""

from __future__ import annotations

import fnmatch
import glob
import io
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl

from torchkeep.data.columns import sample
from torchkeep.errors import DataError, MissingExtraError, StorageError
from torchkeep.storage.base import Storage, open_storage

SUFFIXES = (".parquet", ".pq")
GLOB_CHARS = "*?["
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
FOOTER_THREADS = 8  # footers read at once: S3 latency, not CPU, is what they wait on


def pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingExtraError("pyarrow", "parquet") from None
    return pq


def is_parquet_dataset(path: str) -> bool:
    """Whether `path` names several parquet files: a glob, or a folder / `s3://` prefix holding any."""
    if any(char in path for char in GLOB_CHARS):
        return True
    if path.lower().endswith(SUFFIXES + (".csv",)):
        return False
    if path.startswith("s3://"):
        try:
            return any(_is_data_key(key) for key in open_storage(path, s3_backend="boto3").list())
        except StorageError:
            return False
    if not os.path.isdir(path):
        return False
    return any(_is_data_key(name) for _, _, names in os.walk(path) for name in names)


def dataset_name(path: str) -> str:
    """A short name for a run directory: the folder or prefix of a dataset, a file's stem."""
    parts = [part for part in path.removeprefix("s3://").split("/") if part and not any(c in part for c in GLOB_CHARS)]
    last = parts[-1] if parts else "data"
    return last.rsplit(".", 1)[0] if last.lower().endswith((*SUFFIXES, ".csv")) else last


def _is_data_key(key: str) -> bool:
    """A parquet file of the dataset; `_SUCCESS`, `_metadata` and hidden files are not."""
    name = key.rsplit("/", 1)[-1]
    return name.lower().endswith(SUFFIXES) and not name.startswith(("_", "."))


class UnreadableFile(DataError):
    """A file of the dataset that cannot be read: named in the message, its key in `key`."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Fragment:
    """One row group of one file: the unit a streamed run shuffles, reads ahead and decodes."""

    file: str  # key under the dataset's root
    row_group: int
    rows: int
    bytes: int  # uncompressed, from the footer


class RangedFile(io.RawIOBase):
    """A seekable read-only file over a storage object: every read is one ranged read (one GET on S3)."""

    def __init__(self, storage: Any, key: str, size: int) -> None:
        self.storage, self.key, self.length, self.position = storage, key, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = min(max(base + offset, 0), self.length)
        return self.position

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        end = min(self.length, self.position + target.nbytes)
        data = self.storage.read_range(self.key, self.position, end)
        target[: len(data)] = data
        self.position += len(data)
        return len(data)


@dataclass
class ParquetDataset:
    """The files of one dataset, their partition values, their common schema and their row groups."""

    uri: str  # what the user gave
    storage: Storage  # rooted at the folder / prefix the files are under
    files: list[str]  # keys under the root, sorted
    columns: dict[str, pl.DataType]  # the files' columns, then the partition columns
    partitions: dict[str, dict[str, Any]]  # file -> {partition column: value}
    fragments: list[Fragment]
    skipped: list[str] = field(default_factory=list)  # unreadable files left out (skip_bad_files)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)  # file -> pyarrow FileMetaData
    sizes: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.fragments)

    @property
    def memory_bytes(self) -> int:
        """The table's size in memory as polars holds it, estimated from the footers: per column chunk its
        uncompressed size, or its rows x the width of a value where that is more (strings 16 bytes)."""
        return sum(f.bytes for f in self.fragments)

    def run_bytes(self, numeric_bins: int = 0) -> int:
        """What a run that reads the dataset whole holds: the table and its tensors (8 bytes a value that may
        become a category code, 4 x (2 + bins) for a float column: scaled value, bins, missing indicator)."""
        row = sum(4 * (2 + numeric_bins) if dtype.is_float() else 8 for dtype in self.columns.values())
        return self.memory_bytes + self.rows * row

    def leave_out(self, key: str) -> None:
        """Leave a file out (it cannot be read), counted in `skipped`."""
        self.skipped.append(key)
        self.files = [k for k in self.files if k != key]
        self.fragments = [f for f in self.fragments if f.file != key]

    def where(self, key: str) -> str:
        return f"{self.storage.uri.rstrip('/')}/{key}"

    def describe(self) -> list[dict[str, Any]]:
        """What a resume compares: each fragment's file, row group and rows."""
        return [{"file": f.file, "row_group": f.row_group, "rows": f.rows} for f in self.fragments]

    def _parquet_file(self, key: str) -> Any:
        pq = pyarrow_parquet()
        if self.storage.uri.startswith("s3://"):
            source: Any = RangedFile(self.storage, key, self.sizes[key])
        else:
            source = os.path.join(self.storage.uri, key)
        return pq.ParquetFile(source, metadata=self.metadata.get(key), pre_buffer=True)

    def read_fragment(self, fragment: Fragment, columns: list[str] | None = None) -> pl.DataFrame:
        """One row group as a polars frame (only `columns`, when given), partition columns included."""
        return self._read(fragment.file, lambda handle, names: handle.read_row_group(fragment.row_group, columns=names),
                          columns, f"row group {fragment.row_group}")

    def read_file(self, key: str, columns: list[str] | None = None) -> pl.DataFrame:
        return self._read(key, lambda handle, names: handle.read(columns=names), columns, "")

    def _read(self, key: str, read: Callable[[Any, list[str] | None], Any], columns: list[str] | None,
              what: str) -> pl.DataFrame:
        partition = self.partitions.get(key, {})
        stored = None if columns is None else [c for c in columns if c not in partition]
        try:
            frame = pl.from_arrow(read(self._parquet_file(key), stored))
        except StorageError as error:
            raise DataError(str(error)) from None
        except Exception as error:  # pyarrow's errors for a damaged file are many (ArrowInvalid, OSError, ...)
            first = str(error).strip().splitlines()[0][:200].rstrip(".") if str(error).strip() else type(error).__name__
            raise UnreadableFile(f"{self.where(key)}: cannot read{' ' + what if what else ''} as parquet: {first}",
                                 key) from error
        assert isinstance(frame, pl.DataFrame)
        wanted = [name for name in partition if columns is None or name in columns]
        if wanted:
            frame = frame.with_columns(pl.lit(partition[name], dtype=self.columns[name]).alias(name) for name in wanted)
        return frame

    def read_all(self, columns: list[str] | None = None, *, skip_bad_files: bool = False) -> pl.DataFrame:
        """The whole dataset in memory, files in order (the table a streamed run reads in pieces). With
        `skip_bad_files`, a file that cannot be read is left out and added to `skipped`."""
        frames = []
        for key in [key for key in self.files if any(f.file == key for f in self.fragments)]:
            try:
                frames.append(self.read_file(key, columns))
            except UnreadableFile:
                if not skip_bad_files:
                    raise
                self.leave_out(key)
        if not frames:
            raise DataError(f"{self.uri}: the dataset has no rows")
        return pl.concat(frames, how="vertical")


def open_dataset(path: str, *, skip_bad_files: bool = False) -> ParquetDataset:
    """The dataset at `path` (a folder, a glob, an `s3://` prefix or glob, or one parquet file), its footers
    read and checked. A DataError names a path without parquet files, a file that cannot be read (unless
    `skip_bad_files`), and a file whose columns disagree with the first file's."""
    pq = pyarrow_parquet()
    root, keys = _find(path)
    if not keys:
        raise DataError(f"{path}: no parquet files (*.parquet) found")
    storage = open_storage(root, s3_backend="boto3")
    remote = root.startswith("s3://")

    def footer(key: str) -> tuple[str, Any, int, str | None]:
        try:
            size = storage.size(key) if remote else 0  # type: ignore[attr-defined]
            source = RangedFile(storage, key, size) if remote else os.path.join(root, key)
            return key, pq.ParquetFile(source).metadata, size, None
        except StorageError as error:
            raise DataError(str(error)) from None
        except Exception as error:
            first = str(error).strip().splitlines()[0][:200].rstrip(".") if str(error).strip() else type(error).__name__
            return key, None, 0, first

    with ThreadPoolExecutor(max_workers=FOOTER_THREADS, thread_name_prefix="torchkeep-footers") as pool:
        footers = list(pool.map(footer, keys))
    where = f"{root.rstrip('/')}/{{}}"
    skipped = []
    for key, _, _, problem in footers:
        if problem is not None:
            if not skip_bad_files:
                raise DataError(f"{where.format(key)}: not a readable parquet file ({problem}); fix or remove it,"
                                " or pass --skip-bad-files to leave such files out")
            skipped.append(key)
    good = [(key, metadata, size) for key, metadata, size, problem in footers if problem is None]
    if not good:
        raise DataError(f"{path}: none of the {len(keys)} parquet file(s) can be read (first: {where.format(keys[0])})")
    columns = _common_columns(good, where)
    partitions, partition_types = _partitions([key for key, _, _ in good], where, columns)
    columns.update(partition_types)
    fragments = [
        Fragment(key, i, metadata.row_group(i).num_rows, _memory_bytes(metadata, i))
        for key, metadata, _ in good for i in range(metadata.num_row_groups) if metadata.row_group(i).num_rows > 0
    ]
    return ParquetDataset(uri=path, storage=storage, files=[key for key, _, _ in good], columns=columns,
                          partitions=partitions, fragments=fragments, skipped=skipped,
                          metadata={key: metadata for key, metadata, _ in good},
                          sizes={key: size for key, _, size in good})


def _find(path: str) -> tuple[str, list[str]]:
    """(root, sorted keys of the parquet files under it) for a folder, glob, prefix or single file."""
    pattern = None
    if any(char in path for char in GLOB_CHARS):
        parts = path.split("/")
        first = next(i for i, part in enumerate(parts) if any(char in part for char in GLOB_CHARS))
        root, pattern = "/".join(parts[:first]) or ".", "/".join(parts[first:])
    elif path.lower().endswith(SUFFIXES):
        root, _, name = path.rstrip("/").rpartition("/")
        root = root or "."
        if not path.startswith("s3://") and not os.path.isfile(path):
            raise DataError(f"{path}: no such file")
        return root, [name]
    else:
        root = path
    if root.startswith("s3://"):
        keys = open_storage(root, s3_backend="boto3").list()
    elif pattern is not None:
        keys = [Path(p).relative_to(root).as_posix() for p in glob.glob(os.path.join(root, pattern), recursive=True)
                if os.path.isfile(p)]
    elif os.path.isdir(root):
        keys = [(Path(d) / n).relative_to(root).as_posix() for d, _, names in os.walk(root) for n in names]
    else:
        raise DataError(f"{path}: no such file or folder")
    if pattern is not None and root.startswith("s3://"):
        keys = [key for key in keys if fnmatch.fnmatch(key, pattern)]
    return root, sorted(key for key in keys if _is_data_key(key))


WIDTHS = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 16, "FLOAT": 4, "DOUBLE": 8, "BYTE_ARRAY": 16}


def _memory_bytes(metadata: Any, row_group: int) -> int:
    group = metadata.row_group(row_group)
    total = 0
    for j in range(group.num_columns):
        chunk = group.column(j)
        width = WIDTHS.get(chunk.physical_type, metadata.schema.column(j).length or 8)
        total += max(chunk.total_uncompressed_size, group.num_rows * width)
    return total


def _polars_types(metadata: Any) -> dict[str, pl.DataType]:
    frame = pl.from_arrow(metadata.schema.to_arrow_schema().empty_table())
    assert isinstance(frame, pl.DataFrame)
    return dict(frame.schema)


def _common_columns(footers: list[tuple[str, Any, int]], where: str) -> dict[str, pl.DataType]:
    """The first file's columns and types, which every other file must have too."""
    first_key = footers[0][0]
    first = _polars_types(footers[0][1])
    for key, metadata, _ in footers[1:]:
        found = _polars_types(metadata)
        for name, dtype in first.items():
            if name not in found:
                raise DataError(f"{where.format(key)}: column '{name}' is missing (it is in {where.format(first_key)});"
                                " every file of a dataset needs the same columns")
            if found[name] != dtype:
                raise DataError(f"{where.format(key)}: column '{name}' is {found[name]} here but {dtype} in"
                                f" {where.format(first_key)}; every file of a dataset needs the same column types")
        extra = [name for name in found if name not in first]
        if extra:
            raise DataError(f"{where.format(key)}: column(s) {sample(extra)} are not in {where.format(first_key)};"
                            " every file of a dataset needs the same columns")
    return first


def _partitions(keys: list[str], where: str, columns: dict[str, pl.DataType]
                ) -> tuple[dict[str, dict[str, Any]], dict[str, pl.DataType]]:
    """Hive partition values per file (`year=2024/month=05/part-0.parquet`), typed as a whole: integers
    where every value is one, else floats where every value is one, else strings."""
    raw: dict[str, dict[str, str | None]] = {}
    for key in keys:
        pairs = [part.split("=", 1) for part in key.split("/")[:-1] if "=" in part]
        raw[key] = {name: None if value == HIVE_NULL else unquote(value) for name, value in pairs}
    names = list(raw[keys[0]])
    for key in keys:
        if list(raw[key]) != names:
            raise DataError(f"{where.format(key)}: partition folders {list(raw[key]) or 'none'} differ from"
                            f" {names or 'none'} of {where.format(keys[0])}; every file needs the same partition keys")
    clash = [name for name in names if name in columns]
    if clash:
        raise DataError(f"{where.format(keys[0])}: partition key(s) {sample(clash)} are also columns in the files")
    types: dict[str, pl.DataType] = {}
    for name in names:
        values = [raw[key][name] for key in keys if raw[key][name] is not None]
        dtype: pl.DataType = pl.String()
        for candidate, parse in ((pl.Int64(), int), (pl.Float64(), float)):
            try:
                if values and all(math.isfinite(parse(v)) for v in values):  # type: ignore[arg-type]
                    dtype = candidate
                    break
            except ValueError:
                continue
        types[name] = dtype
    typed = {key: {name: None if value is None else _parse(value, types[name]) for name, value in pairs.items()}
             for key, pairs in raw.items()}
    return typed, types


def _parse(value: str, dtype: pl.DataType) -> Any:
    if dtype == pl.Int64:
        return int(value)
    if dtype == pl.Float64:
        return float(value)
    return value


def memory_limit_bytes(fraction: float = 0.25) -> int:
    """A share of this machine's memory (or of its cgroup's limit, when lower): the default size up to
    which a dataset is read whole."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return int(total * fraction)
