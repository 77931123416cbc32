"""FragmentCache: a streamed run's decoded row groups on local disk, so later epochs skip parquet and `transform`.

The first epoch decodes every fragment (row group) from parquet; the StreamLoader hands each fragment's
tensors (after the null-target filter and `TableSchema.transform`) to `put`, which writes them as one raw
file: the tensors' bytes one after the other, each section padded to 64 bytes. Later epochs `get` them
back by memory map (views of the mapped file, copy-on-write: no parse, no copy before the window's).

A file's name is a hash of everything that decides its bytes: the schema (its JSON), the columns read,
the fragment's file, row group and rows, its row group's footer (column chunk offsets, sizes and
statistics), and for a local file its size and modification time. Data that changed under the same path
therefore gets a new name and is never read from a stale file; files of this folder that the loader does
not expect are deleted when it opens the folder (so the folder holds one dataset's tensors at most).

Crash safety: a file is written under a temporary name and renamed into place, so a run killed mid-write
(kill -9) leaves a whole file or none; a file of the wrong size is ignored and rewritten. A resumed run
reuses what is there. Disk: at most `limit_bytes` (counted from the files present); past it, or when a
write fails (disk full, read-only folder), the fragment is not cached and is read from parquet every
epoch, as without a cache, and `full` says why (the loader warns once).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

ALIGN = 64
SUFFIX = ".tensors"


def fragment_identity(dataset: Any, fragment: Any) -> dict[str, Any]:
    """What says a fragment is the same data: its place, rows, footer entry and (local files) size and mtime."""
    identity: dict[str, Any] = {"file": fragment.file, "row_group": fragment.row_group, "rows": fragment.rows}
    metadata = dataset.metadata.get(fragment.file)
    if metadata is not None:
        identity["footer"] = repr(metadata.row_group(fragment.row_group).to_dict())
    if dataset.storage.uri.startswith("s3://"):
        identity["size"] = dataset.sizes.get(fragment.file)
    else:
        try:
            stat = os.stat(os.path.join(dataset.storage.uri, fragment.file))
        except OSError:  # gone: reading it says so
            return identity
        identity.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    return identity


class FragmentCache:
    """Per-fragment tensor files in `folder`, named by `keys` (one per fragment index), at most `limit_bytes`;
    `layout`: each tensor's (name, dtype, shape of one row), in the order they are written."""

    def __init__(self, folder: str | os.PathLike[str], keys: list[str], limit_bytes: int,
                 layout: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.limit_bytes = limit_bytes
        self.full: str | None = None  # why a fragment was left uncached, once one was
        self.layout = layout
        self.lock = threading.Lock()
        wanted = {key + SUFFIX for key in keys}
        self.used = 0
        for path in self.folder.iterdir():
            if path.name in wanted:
                self.used += path.stat().st_size
            elif path.is_file():  # another dataset's or schema's tensors, or a write cut short
                path.unlink(missing_ok=True)
        self.hits = self.writes = 0

    def remove(self) -> None:
        """Delete the folder, and its parent when that is left empty (a finished run keeps no decoded copy)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()

    @staticmethod
    def key(schema_json: str, columns: list[str], identity: dict[str, Any]) -> str:
        text = json.dumps({"schema": schema_json, "columns": columns, "fragment": identity}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:40]

    def path(self, index: int) -> Path:
        return self.folder / (self.keys[index] + SUFFIX)

    def _size(self, rows: int) -> int:
        return sum(_padded(rows * _row_nbytes(dtype, shape)) for _, dtype, shape in self.layout)

    def get(self, index: int, rows: int) -> dict[str, torch.Tensor] | None:
        """The fragment's tensors from its file, or None (not cached yet, or a file of the wrong size)."""
        path = self.path(index)
        try:
            if path.stat().st_size != self._size(rows):
                return None
            raw = np.memmap(path, dtype=np.uint8, mode="c")  # copy-on-write: writable, never written back
        except (OSError, ValueError):
            return None
        buffer = torch.from_numpy(raw)
        out, start = {}, 0
        for name, dtype, shape in self.layout:
            nbytes = rows * _row_nbytes(dtype, shape)
            out[name] = buffer[start : start + nbytes].view(dtype).view(rows, *shape)
            start += _padded(nbytes)
        self.hits += 1
        return out

    def put(self, index: int, tensors: dict[str, torch.Tensor]) -> None:
        """Write a fragment's tensors (rows along dim 0), unless that would pass the limit or the write fails."""
        layout = [(name, value.dtype, tuple(value.shape[1:])) for name, value in tensors.items()]
        rows = len(next(iter(tensors.values())))
        with self.lock:
            if layout != self.layout:
                raise AssertionError(f"tensors {layout} do not match the cache's layout {self.layout}")
            if self.full is not None:
                return
            size = self._size(rows)
            if self.used + size > self.limit_bytes:
                self.full = f"the cache limit of {self.limit_bytes / 2**20:,.0f} MiB is reached"
                return
            self.used += size  # reserved before writing, so threads writing at once stay under the limit
        path = self.path(index)
        temporary = path.with_name(f"{path.name}.{threading.get_ident()}.tmp")
        try:
            with open(temporary, "wb") as handle:
                for name, _, _ in layout:
                    data = tensors[name].contiguous().numpy().view(np.uint8).reshape(-1)
                    handle.write(memoryview(data))
                    handle.write(b"\0" * (_padded(data.nbytes) - data.nbytes))
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            with self.lock:
                self.used -= size
                self.full = f"writing {path} failed ({error.strerror or error})"
            return
        with self.lock:
            self.writes += 1


def _row_nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()


def _padded(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN
