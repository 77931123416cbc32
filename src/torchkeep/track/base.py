"""The Tracker protocol and the JSONL tracker that every run writes (`metrics.jsonl`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from torchkeep.errors import TorchkeepError
from torchkeep.storage import Storage
from torchkeep.storage.local import LocalStorage

log = logging.getLogger("torchkeep")


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class Guarded:
    """A tracker whose failure is reported once (a warning on the "torchkeep" logger) and never ends a
    run: after it fails, its log() is no longer called; close() is still tried, quietly."""

    def __init__(self, tracker: Tracker, name: str) -> None:
        self.tracker, self.name = tracker, name
        self.failed = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.failed:
            return
        try:
            self.tracker.log(metrics, step)
        # A tracker is a side channel running someone else's code (a disk-full event file, a W&B
        # backend gone away): whatever it raises, training must go on. Reported once, with its name.
        except Exception as error:  # noqa: BLE001
            self._fail("logging", error)

    def close(self) -> None:
        try:
            self.tracker.close()
        except Exception as error:  # noqa: BLE001 (same reason as in log)
            if not self.failed:
                self._fail("closing", error)

    def _fail(self, doing: str, error: Exception) -> None:
        self.failed = True
        log.warning("%s tracker failed while %s (%s: %s); training goes on without it",
                    self.name, doing, type(error).__name__, error)


class JsonlTracker:
    """One JSON object per event: {"step", "time", ...metrics} in `metrics.jsonl` of a run.

    On local disk lines are appended as they come; on an object store (no append) the whole file is
    rewritten at most every `flush_every_s` and at close. A failing store is reported once, never fatal.
    """

    def __init__(self, storage: Storage, key: str = "metrics.jsonl", flush_every_s: float = 10.0) -> None:
        self.storage, self.key, self.flush_every_s = storage, key, flush_every_s
        self._local = Path(storage.uri) / key if isinstance(storage, LocalStorage) else None
        self._handle: Any = None
        self._lines: list[str] = []
        self._flushed_at = time.monotonic()
        self._failed = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._failed:
            return
        line = json.dumps({"step": step, "time": time.time(), **metrics}) + "\n"
        try:
            if self._local is not None:
                if self._handle is None:
                    self._local.parent.mkdir(parents=True, exist_ok=True)
                    self._handle = open(self._local, "a", encoding="utf-8")
                self._handle.write(line)
                self._handle.flush()
            else:
                if not self._lines and self.storage.exists(self.key):  # a resumed run: keep its history
                    self._lines.append(bytes(self.storage.read(self.key)).decode())
                self._lines.append(line)
                if time.monotonic() - self._flushed_at > self.flush_every_s:
                    self._flush()
        except (OSError, TorchkeepError) as error:
            self._failed = True
            log.warning("metrics log %s/%s failed (%s); training goes on without it", self.storage.uri, self.key, error)

    def _flush(self) -> None:
        self.storage.write(self.key, "".join(self._lines).encode())
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lines and not self._failed:
            try:
                self._flush()
            except TorchkeepError as error:
                log.warning("metrics log %s/%s failed (%s)", self.storage.uri, self.key, error)
