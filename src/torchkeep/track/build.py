"""Which trackers a run uses ([track] in TOML, `--track` on the CLI) and building them: an explicit match.

JSONL (`metrics.jsonl` in the run directory) is always on; `report` and `runs` read it. Every tracker
comes wrapped in Guarded: once running, a failing one is reported once and never ends training.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkeep.errors import ConfigError, StorageError
from torchkeep.storage import open_storage
from torchkeep.track.base import Guarded, JsonlTracker, Tracker

log = logging.getLogger("torchkeep")

KNOWN = ("jsonl", "tensorboard", "wandb")


@dataclass(kw_only=True)
class TrackConfig:
    trackers: list[str] = field(default_factory=lambda: ["jsonl"])  # plus "tensorboard", "wandb"

    def __post_init__(self) -> None:
        if isinstance(self.trackers, str) or not all(isinstance(n, str) for n in self.trackers):
            raise ConfigError(f"track.trackers must be a list of names such as [\"tensorboard\", \"wandb\"]"
                              f" (got {self.trackers!r})")
        check_names(self.trackers)
        self.trackers = list(dict.fromkeys(self.trackers))


def check_names(names: list[str]) -> None:
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise ConfigError(f"unknown tracker '{unknown[0]}' (known: {', '.join(KNOWN)})")


def local_run_dir(run_dir: str, tracker: str) -> str:
    """The run directory as a local path; for an object-store run a local temporary directory (with a
    warning saying where), since TensorBoard and W&B write local files."""
    if "://" in run_dir and not run_dir.startswith("file://"):
        directory = tempfile.mkdtemp(prefix=f"torchkeep-{tracker}-")
        log.warning("%s logs of %s are written locally to %s (they are not copied to the run directory)",
                    tracker, run_dir, directory)
        return directory
    return run_dir.removeprefix("file://")


def build_trackers(names: list[str], run_dir: str, config: dict[str, Any] | None = None) -> list[Tracker]:
    """JSONL plus the named trackers for a run; `config` (the resolved RunConfig as a dict) is logged
    as hyperparameters. Unknown name: ConfigError; missing package: MissingExtraError; a directory
    that cannot be written: StorageError. All before the first training step."""
    check_names(names)
    trackers: list[Tracker] = [Guarded(JsonlTracker(open_storage(run_dir), "metrics.jsonl"), "jsonl")]
    try:
        for name in dict.fromkeys(names):
            match name:
                case "jsonl":
                    continue
                case "tensorboard":
                    from torchkeep.track.tensorboard import TensorBoardTracker

                    directory = os.path.join(local_run_dir(run_dir, name), "tensorboard")
                    tracker: Tracker = _writable(name, directory, lambda: TensorBoardTracker(directory, config))
                case "wandb":
                    from torchkeep.track.wandb import WandbTracker

                    directory = local_run_dir(run_dir, name)  # wandb adds wandb/<run>/ below it
                    run_name = Path(run_dir.rstrip("/")).name
                    tracker = _writable(name, directory, lambda: WandbTracker(directory, run_name, config))
                case _:  # check_names has refused it already
                    raise AssertionError(name)
            trackers.append(Guarded(tracker, name))
    except BaseException:
        close_trackers(trackers)
        raise
    return trackers


def _writable(name: str, directory: str, create: Callable[[], Tracker]) -> Tracker:
    try:
        return create()
    except OSError as error:
        raise StorageError(f"{name}: cannot write logs to {directory} ({error.strerror or error})") from None


def close_trackers(trackers: list[Tracker]) -> None:
    """Close every tracker, each on its own: one that fails does not keep the others open."""
    for tracker in trackers:
        tracker.close()
