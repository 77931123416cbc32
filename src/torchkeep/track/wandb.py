"""Weights & Biases: the resolved config at init, the same scalar names as TensorBoard while training.

Needs `pip install 'torchkeep[wandb]'`. wandb reads its own environment: `WANDB_MODE=offline` logs
to local files with no account (`wandb sync DIR` uploads them later), `WANDB_PROJECT` (default
"torchkeep"), `WANDB_DIR` (default: the run directory), `WANDB_SILENT=true`.
"""

from __future__ import annotations

import os
from typing import Any

from torchkeep.errors import ConfigError, MissingExtraError
from torchkeep.track.events import final_validation, metric_names, scalars

DEFAULT_PROJECT = "torchkeep"


def import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise MissingExtraError("wandb", "wandb") from None
    return wandb


class WandbTracker:
    """One W&B run, started now (so a missing login fails before training, not after it)."""

    def __init__(self, directory: str, name: str, config: dict[str, Any] | None = None) -> None:
        wandb = import_wandb()
        self.config = config
        directory = os.environ.get("WANDB_DIR") or directory
        os.makedirs(directory, exist_ok=True)
        try:
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=name,
                                  config=config, dir=directory)
        except wandb.errors.Error as error:
            raise ConfigError(f"wandb could not start a run: {error} (or set WANDB_MODE=offline to log"
                              " locally without an account)") from None
        self._valid: list[dict[str, Any]] = []

    @property
    def directory(self) -> str:
        """Where this run's files are (`.../wandb/offline-run-<time>-<id>` in offline mode)."""
        return os.path.dirname(self.run.dir)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if metrics.get("split") == "valid":
            self._valid.append(metrics)
        self.run.log(scalars(metrics), step=step)

    def close(self) -> None:
        try:
            final = final_validation(self._valid, self.config) or {}
            self.run.summary.update({f"final/{k}": final[k] for k in metric_names(final)})
        finally:
            self.run.finish()
