"""The JSON files of runs and bundles (config.json, run.json, model.json ...) in any Storage."""

from __future__ import annotations

import json
from typing import Any

from torchkeep.errors import CheckpointError
from torchkeep.storage.base import Storage


def write_json(storage: Storage, key: str, value: Any) -> None:
    storage.write(key, json.dumps(value, indent=1, default=str).encode())


def read_json(storage: Storage, key: str, where: str) -> Any:
    """The file's JSON; one clear line when it is missing ("not a torchkeep run") or unreadable."""
    if not storage.exists(key):  # a missing bucket or unreadable store raises its own error here
        raise CheckpointError(f"{where}: not a torchkeep run (no {key})")
    try:
        return json.loads(storage.read(key))
    except ValueError as error:
        raise CheckpointError(f"{where}/{key}: unreadable ({error})") from None
