"""One exception tree. A user error is one of these and is shown as one line, never a traceback."""

from __future__ import annotations


class TorchkeepError(Exception):
    """Base of every error torchkeep raises on purpose."""


class ConfigError(TorchkeepError):
    """A setting is invalid: says what, why and how to fix it."""


class DataError(TorchkeepError):
    """Input data is missing, unreadable or does not match what was expected."""


class CheckpointError(TorchkeepError):
    """A checkpoint is missing, incomplete, corrupt or refuses to load."""


class StorageError(TorchkeepError):
    """Reading or writing a path or object store failed."""


class ServeError(TorchkeepError):
    """The prediction server cannot start or serve."""


class MissingExtraError(TorchkeepError):
    """An optional dependency is not installed; names the extra that brings it."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: pip install 'torchkeep[{extra}]'")


class DistributedError(TorchkeepError):
    """A multi-process run failed: a worker died, or the processes could not meet."""
