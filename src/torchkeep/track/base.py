"""The Tracker protocol and the JSONL tracker that every run writes (`metrics.jsonl`)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("torchkeep")


class Tracker(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


class JsonlTracker:
    """One JSON object per event: {"step", "time", ...metrics}. A failing disk is reported once, never fatal."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self._handle: Any = None
        self._failed = False

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._failed:
            return
        try:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.path, "a", encoding="utf-8")
            self._handle.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
            self._handle.flush()
        except OSError as error:
            self._failed = True
            log.warning("metrics log %s failed (%s); training goes on without it", self.path, error)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
