"""The run directory, once for every kind of run (tables, images, text, own models).

A run directory holds:
    run.json        status, data fingerprint, timings, final metrics
    config.json     the resolved settings
    schema.json     the fitted schema (tables, text, images; not an own model's run)
    model.json      architecture + constructor arguments
    transfer.json   what init_from loaded (runs started from other weights only)
    metrics.jsonl   one JSON object per logged event
    checkpoints/    step-NNNNNNNNN/ (safetensors + state.json + MANIFEST.json), LATEST
    bundle/         the final model for predict / serve (written when training ends)
Everything a resume trusts is written atomically before the first step; run.json is written last when
a run is set up, so a directory without it holds nothing trained yet.

Also here: the one data fingerprint (what a resume checks its data against) and the one seeded split.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchkeep.errors import ConfigError, DataError
from torchkeep.storage import Storage, open_storage
from torchkeep.storage.jsonfile import read_json, write_json


@dataclass
class RunDir:
    """A run directory (local or s3://) and its JSON files."""

    path: str
    storage: Storage

    @classmethod
    def open(cls, path: str) -> RunDir:
        """An existing run, or the place for a new one (reopened for resume, or checked by `new`)."""
        return cls(path, open_storage(path))

    @classmethod
    def new(cls, path: str | None, name: str, *, resume_hint: str = "--resume {path}",
            run_dir_hint: str = "--run-dir") -> RunDir:
        """`path`, else runs/<name>-<time>; an error when a run was set up there already."""
        path = path or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = cls.open(path)
        if run.started:
            raise ConfigError(f"{path}: run directory exists and is not empty; continue it with"
                              f" {resume_hint.format(path=path)} or choose another {run_dir_hint}")
        return run

    @property
    def started(self) -> bool:
        """Whether a run was set up here (run.json is written last when it is)."""
        return self.storage.exists("run.json")

    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def read(self, key: str) -> Any:
        return read_json(self.storage, key, self.path)

    def write(self, key: str, value: Any) -> None:
        write_json(self.storage, key, value)

    def write_setup(self, *, config: dict[str, Any], model: dict[str, Any], data: dict[str, Any],
                    schema: dict[str, Any] | None = None, transfer: dict[str, Any] | None = None) -> None:
        """The files a resume trusts, run.json last (with status "running" and the data fingerprint)."""
        if transfer is not None:
            self.write("transfer.json", transfer)
        self.write("config.json", config)
        if schema is not None:
            self.write("schema.json", schema)
        self.write("model.json", model)
        self.write("run.json", {"status": "running", "created_at": time.time(), "data": data})

    def finish(self, status: str, started: float, valid: dict[str, float] | None, **session: Any) -> None:
        """run.json at the end of a training session: its status, the seconds it added, final metrics, and
        `session` fields (world_size, strategy)."""
        run = self.read("run.json")
        run.update(status=status, updated_at=time.time(), seconds=run.get("seconds", 0) + time.time() - started,
                   **session)
        if valid is not None:
            run["valid"] = valid
        self.write("run.json", run)

    @property
    def bundle(self) -> str:
        return f"{self.path.rstrip('/')}/bundle"


def fingerprint(rows: int, columns: list[Any], content: Any, **extra: Any) -> dict[str, Any]:
    """What run.json records of a run's data, and what a resume compares: row count, column names and a
    hash of the content. `content`: an int hash already made (a polars frame's `hash_rows` sum), or
    bytes / a numpy array (pixels, a list of files and labels), hashed here with sha256."""
    if isinstance(content, np.ndarray):
        content = np.ascontiguousarray(content).data
    if isinstance(content, (bytes, bytearray, memoryview)):
        content = int(hashlib.sha256(content).hexdigest()[:16], 16)
    return {"rows": rows, "columns": columns, "hash": int(content), **extra}


def split_index(count: int, *, seed: int, valid_fraction: float, what: str, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(training positions, validation positions): one seeded permutation, the first share held out."""
    if count < 2:
        raise DataError(f"{what}: {count} {unit}(s) cannot be split into training and validation")
    order = np.random.default_rng(seed).permutation(count)
    n_valid = max(1, round(count * valid_fraction))
    return order[n_valid:], order[:n_valid]
