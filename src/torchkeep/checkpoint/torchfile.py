"""Reading `.pth` / `.pt` files that other code wrote with `torch.save`, without running any of it.

A `.pth` is a pickle, and a pickle can name any function to call while it loads (`__reduce__`):
`torch.load(weights_only=False)` on a file from elsewhere runs whatever it names. Here every such
file is read with `torch.load(weights_only=True)`, whose unpickler builds only tensors, numbers,
strings and containers; a file that needs anything more is refused, and the refusal says what it
asked for. The file's code never runs.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from torchkeep.errors import CheckpointError, DataError, StorageError
from torchkeep.storage import open_storage

PICKLE_SUFFIXES = (".pth", ".pt")


def split_uri(uri: str) -> tuple[str, str]:
    """(parent, name) of a file path or object URI: `s3://b/x/m.pth` -> (`s3://b/x`, `m.pth`)."""
    if "://" in uri and not uri.startswith("file://"):
        scheme, _, rest = uri.partition("://")
        parent, _, name = rest.rstrip("/").rpartition("/")
        if not parent or not name:
            raise DataError(f"{uri}: names a bucket, not a file")
        return f"{scheme}://{parent}", name
    path = Path(uri.removeprefix("file://"))
    return str(path.parent), path.name


def read_file(uri: str) -> bytearray:
    """The bytes of one local file or object; a missing one is a DataError naming it."""
    parent, name = split_uri(uri)
    try:
        return open_storage(parent).read(name)
    except StorageError as error:
        raise DataError(f"{uri}: no such file" if "no such file" in str(error) else str(error)) from None


def _refusal(uri: str, error: Exception) -> str:
    message = str(error)
    if match := re.search(r"Unsupported global: GLOBAL (\S+)", message):
        return (f"{uri}: refused: the pickle asks for {match.group(1)} to load, which could run code; only"
                " tensors, numbers, strings and containers are read (torch.load weights_only=True)")
    if "TorchScript" in message:
        return (f"{uri}: refused: a TorchScript archive holds a program, not just weights; load it with"
                " torch.jit.load only if you trust where it came from")
    if match := re.search(r"Unsupported operand (\d+)", message):
        return (f"{uri}: refused: the pickle uses opcode {match.group(1)}, which a weights-only load does not"
                " allow (a plain pickle, not one written by torch.save?); nothing in it was run")
    reason = next((line.strip() for line in message.splitlines() if line.strip()), type(error).__name__)
    return f"{uri}: not a PyTorch file that can be read weights-only ({reason[:160]})"


def load_weights_only(uri: str, data: bytes | bytearray | None = None) -> Any:
    """`torch.load(..., weights_only=True, map_location="cpu")` of a local file or object.

    Anything the weights-only unpickler refuses becomes a one-line CheckpointError with the reason.
    """
    data = read_file(uri) if data is None else data
    try:
        with warnings.catch_warnings():
            # "Detected pickle protocol 4" and "looks like a TorchScript archive": the refusal says it.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    # torch.load reports a malformed file with whatever its parser tripped on; all of them mean
    # "not readable weights-only", and none of them has run anything from the file.
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, IndexError, EOFError, TypeError,
            AttributeError, OSError) as error:
        raise CheckpointError(_refusal(uri, error)) from None
