"""The Storage protocol: five verbs, `write` atomic (a reader sees all of an object or none of it)."""

from __future__ import annotations

from typing import Protocol

from torchkeep.errors import StorageError


class Storage(Protocol):
    """A flat namespace of objects addressed by '/'-separated keys under one root URI."""

    uri: str

    def read(self, key: str) -> bytearray: ...

    def write(self, key: str, data: bytes | bytearray | memoryview | list[memoryview]) -> None:
        """Atomic: readers see the whole object or nothing. A list of buffers is written in order."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...


def open_storage(uri: str) -> Storage:
    """Storage rooted at `uri`: a local path, `file://path`, or (with the s3 extra) `s3://bucket/prefix`."""
    if uri.startswith("s3://"):
        from torchkeep.storage.s3 import S3Storage

        return S3Storage(uri)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise StorageError(f"{uri}: unsupported scheme '{scheme}://' (expected a local path or file://)")
    from torchkeep.storage.local import LocalStorage

    return LocalStorage(uri.removeprefix("file://"))
