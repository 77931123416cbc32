"""The Storage protocol: five verbs, `write` atomic (a reader sees all of an object or none of it)."""

from __future__ import annotations

import os
from typing import Protocol

from torchkeep.errors import ConfigError, StorageError
from torchkeep.storage.local import LocalStorage

S3_BACKENDS = ("boto3", "s3torchconnector")


class Storage(Protocol):
    """A flat namespace of objects addressed by '/'-separated keys under one root URI."""

    uri: str

    def read(self, key: str) -> bytearray: ...

    def write(self, key: str, data: bytes | bytearray | memoryview | list[memoryview]) -> None:
        """Atomic: readers see the whole object or nothing. A list of buffers is written in order."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]: ...

    def delete(self, key: str) -> None: ...


def s3_backend_of(s3_backend: str | None = None) -> str:
    """The client behind `s3://` URIs: `s3_backend` if given, else TORCHKEEP_S3_BACKEND, else boto3."""
    backend = s3_backend or os.environ.get("TORCHKEEP_S3_BACKEND") or "boto3"
    if backend not in S3_BACKENDS:
        source = "s3_backend" if s3_backend else "TORCHKEEP_S3_BACKEND"
        raise ConfigError(f"{source} must be one of {', '.join(S3_BACKENDS)} (got '{backend}')")
    return backend


def open_storage(uri: str, *, s3_backend: str | None = None) -> Storage:
    """Storage rooted at `uri`: a local path, `file://path`, or (with the s3 extra) `s3://bucket/prefix`.

    `s3://` goes through boto3, or through s3torchconnector's client when `s3_backend` (or the
    environment variable TORCHKEEP_S3_BACKEND) is "s3torchconnector".
    """
    if uri.startswith("s3://"):
        if s3_backend_of(s3_backend) == "s3torchconnector":
            from torchkeep.storage.s3_connector import S3ConnectorStorage

            return S3ConnectorStorage(uri)
        from torchkeep.storage.s3 import S3Storage

        return S3Storage(uri)
    if "://" in uri and not uri.startswith("file://"):
        scheme = uri.split("://", 1)[0]
        raise StorageError(f"{uri}: unsupported scheme '{scheme}://' (expected a local path or file://)")
    return LocalStorage(uri.removeprefix("file://"))
