"""Local disk: every write goes to a temp file, is fsynced, renamed over the target, and the directory fsynced."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from torchkeep.errors import StorageError


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | bytearray | memoryview | list[memoryview]) -> None:
    """Write `data` (or a list of buffers, in order) to `path`: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            for chunk in data if isinstance(data, list) else [data]:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as error:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(f"{path}: write failed: {error.strerror or error}") from error


class LocalStorage:
    def __init__(self, root: str) -> None:
        self.uri = root
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def read(self, key: str) -> bytearray:
        """The whole file in one writable buffer (tensors decoded from it view it without a copy)."""
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                buffer = bytearray(os.fstat(handle.fileno()).st_size)
                handle.readinto(buffer)
                return buffer
        except FileNotFoundError:
            raise StorageError(f"{path}: no such file") from None
        except OSError as error:
            raise StorageError(f"{path}: cannot read: {error.strerror or error}") from error

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise StorageError(f"{self._path(key)}: no such file") from None
        except OSError as error:
            raise StorageError(f"{self._path(key)}: cannot read: {error.strerror or error}") from error

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a file: what a columnar reader asks for (a footer, one column chunk)."""
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(start)
                return handle.read(end - start)
        except FileNotFoundError:
            raise StorageError(f"{self._path(key)}: no such file") from None
        except OSError as error:
            raise StorageError(f"{self._path(key)}: cannot read: {error.strerror or error}") from error

    def write(self, key: str, data: bytes | bytearray | memoryview | list[memoryview]) -> None:
        atomic_write(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (files only, recursive), sorted; temp files of unfinished writes are hidden."""
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys = []
        # os.walk skips directories that vanish mid-walk (retention deleting an old checkpoint while
        # someone lists the run), where Path.rglob raises.
        for directory, _, files in os.walk(base):
            for name in files:
                if not name.startswith("."):
                    keys.append((Path(directory) / name).relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
