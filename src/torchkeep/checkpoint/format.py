"""The on-storage checkpoint format.

A checkpoint is a prefix `checkpoints/step-000001234/` holding tensor files (safetensors) and
`state.json`, committed by `MANIFEST.json` written last with every file's size and sha256.
A checkpoint whose manifest is missing, unreadable, or does not match its files does not exist.
A checkpoint of sharded state (several processes, FSDP2) has other files and `"layout": "sharded"`
in its manifest (checkpoint/shards.py); the commit is the same: `commit`, once every file is written.
Nothing here ever unpickles.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from torchkeep.errors import CheckpointError, StorageError
from torchkeep.storage import Storage

SCHEMA_VERSION = 1
MANIFEST = "MANIFEST.json"
LATEST = "LATEST"
PREFIX = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def step_of(name: str) -> int | None:
    if not name.startswith("step-"):
        return None
    try:
        return int(name.removeprefix("step-"))
    except ValueError:
        return None


@dataclass
class CheckpointInfo:
    """What `list_checkpoints` knows of one checkpoint without loading its tensors."""

    name: str
    step: int
    status: str  # "complete" | "incomplete" | "corrupt"
    reason: str = ""
    size_bytes: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    created_at: float | None = None


Buffers = bytes | bytearray | memoryview | list[memoryview]


def size_and_digest(data: Buffers) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    for chunk in data if isinstance(data, list) else [data]:
        digest.update(chunk)
        size += memoryview(chunk).nbytes
    return size, digest.hexdigest()


def write_checkpoint(storage: Storage, name: str, files: dict[str, Buffers], meta: dict[str, Any]) -> None:
    """Write every file, then the manifest (the commit point), then LATEST.

    A file may be given as a list of buffers (a streamed safetensors file): it is hashed and written
    chunk by chunk, never joined into one copy.
    """
    base = f"{PREFIX}/{name}"
    entries = {}
    # Hash in a second thread while the bytes are written (hashlib and file I/O both release the
    # GIL on big buffers): one pass over the data in wall time instead of two.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchkeep-hash") as hasher:
        digests = {file_name: hasher.submit(size_and_digest, data) for file_name, data in files.items()}
        for file_name, data in files.items():
            storage.write(f"{base}/{file_name}", data)
            size, digest = digests[file_name].result()
            entries[file_name] = {"size": size, "sha256": digest}
    commit(storage, name, entries, meta)


def commit(storage: Storage, name: str, entries: dict[str, dict[str, Any]], meta: dict[str, Any]) -> None:
    """The commit point: the manifest (each file's size and sha256, all already written), then LATEST."""
    base = f"{PREFIX}/{name}"
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "created_at": time.time(),
        **meta,
        "files": entries,
    }
    storage.write(f"{base}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    storage.write(f"{PREFIX}/{LATEST}", name.encode())


def read_manifest(storage: Storage, name: str) -> dict[str, Any]:
    key = f"{PREFIX}/{name}/{MANIFEST}"
    if not storage.exists(key):
        raise CheckpointError(f"{storage.uri}/{PREFIX}/{name}: incomplete (no {MANIFEST})")
    try:
        manifest = json.loads(storage.read(key))
        manifest["files"].items()
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{storage.uri}/{key}: unreadable manifest ({error})") from error
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CheckpointError(
            f"{storage.uri}/{key}: schema_version {manifest.get('schema_version')!r},"
            f" expected {SCHEMA_VERSION}"
        )
    return manifest


def read_checkpoint(storage: Storage, name: str) -> tuple[dict[str, Any], dict[str, bytearray]]:
    """The manifest and every file's bytes, each checked against the manifest's size and sha256.

    Files are read in parallel, each hashed as soon as it is in: one file's hash overlaps the
    next one's download.
    """
    manifest = read_manifest(storage, name)
    entries = manifest["files"].items()
    with ThreadPoolExecutor(max_workers=max(1, len(entries)), thread_name_prefix="torchkeep-read") as pool:
        futures = {file_name: pool.submit(read_verified, storage, name, file_name, entry)
                   for file_name, entry in entries}
        return manifest, {file_name: future.result() for file_name, future in futures.items()}


def read_verified(storage: Storage, name: str, file_name: str, entry: dict[str, Any]) -> bytearray:
    """One file of checkpoint `name`, checked against its manifest `entry` (size and sha256)."""
    where = f"{storage.uri}/{PREFIX}/{name}/{file_name}"
    try:
        data = storage.read(f"{PREFIX}/{name}/{file_name}")
    except StorageError as error:
        raise CheckpointError(f"{where}: listed in the manifest but unreadable ({error})") from error
    if len(data) != entry["size"]:
        raise CheckpointError(f"{where}: {len(data)} bytes, manifest says {entry['size']} (truncated or altered)")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{where}: sha256 does not match the manifest (altered bytes)")
    return data


def list_checkpoints(storage: Storage, verify: bool = False) -> list[CheckpointInfo]:
    """Every checkpoint prefix, oldest first. `verify` hashes every file (slow on big runs)."""
    names: set[str] = set()
    for key in storage.list(PREFIX):
        parts = key.split("/")
        if len(parts) >= 3 and step_of(parts[1]) is not None:
            names.add(parts[1])
    infos = []
    for name in sorted(names, key=lambda n: step_of(n) or 0):
        info = CheckpointInfo(name=name, step=step_of(name) or 0, status="complete")
        try:
            manifest = read_checkpoint(storage, name)[0] if verify else read_manifest(storage, name)
        except CheckpointError as error:
            info.status = "incomplete" if "incomplete" in str(error) else "corrupt"
            info.reason = str(error)
        else:
            info.size_bytes = sum(entry["size"] for entry in manifest["files"].values())
            info.metrics = manifest.get("metrics", {})
            info.epoch = manifest.get("epoch")
            info.created_at = manifest.get("created_at")
        infos.append(info)
    return infos
