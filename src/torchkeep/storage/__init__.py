"""Where bytes live: local disk (and `file://`); object stores join through the same protocol."""

from torchkeep.storage.base import Storage, open_storage

__all__ = ["Storage", "open_storage"]
