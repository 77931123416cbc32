"""StudyConfig: how a study searches (`[tune]` in the run's TOML, `torchkeep tune` flags, `torchkeep.tune` keywords).

    [tune]
    trials = 20              # trials sampled from the space
    concurrent = 2           # trials at once; each gets cores // concurrent CPU threads
    search = "random"        # or "optuna" (TPE, needs optuna: pip install 'torchkeep[tune]')
    grace_period = 1         # ASHA: the least budget a trial gets before it can be stopped
    reduction_factor = 3     # ASHA: about 1 / reduction_factor of the trials go on at each rung
    [tune.space]
    lr = {loguniform = [1e-4, 1e-1]}

The budget of a trial is its run's: `epochs` (validation each epoch, ASHA counts epochs) or `steps`
(the table's validation cadence, ASHA counts optimizer steps); neither: a table run's own budget of
about 4,000 steps, and for image and text runs their default epochs (30 and 5).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from typing import Any

from torchkeep.errors import ConfigError
from torchkeep.training.budget import TARGET_STEPS

SEARCHES = ("random", "optuna")


@dataclass(kw_only=True)
class StudyConfig:
    trials: int = 8
    concurrent: int = 1
    search: str = "random"
    grace_period: int | None = None  # None: budget / reduction_factor ** 3 (at least 1)
    reduction_factor: int = 3
    epochs: int | None = None  # per trial at most; ASHA's unit is then the epoch
    steps: int | None = None  # per trial at most (tables); ASHA's unit is then the optimizer step
    monitor: str | None = None  # validation metric to optimize; None: the task's (roc_auc, log_loss, rmse)
    gpus_per_trial: float = 0.0
    address: str | None = None  # a Ray cluster to join ("auto", "ray://host:10001", "host:6379"); None: a local Ray
    seed: int = 0  # of the search: the same seed samples the same trials
    space: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("trials", "concurrent", "reduction_factor"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (2 if name == "reduction_factor" else 1):
                raise ConfigError(f"tune.{name} must be an integer >= {2 if name == 'reduction_factor' else 1}"
                                  f" (got {value!r})")
        for name in ("grace_period", "epochs", "steps"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"tune.{name} must be an integer >= 1 (got {value!r})")
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("a study's budget is epochs or steps per trial; give one of them")
        if self.search not in SEARCHES:
            raise ConfigError(f"tune.search must be {' or '.join(SEARCHES)} (got {self.search!r})")
        if self.gpus_per_trial < 0:
            raise ConfigError(f"tune.gpus_per_trial must be >= 0 (got {self.gpus_per_trial})")

    @property
    def unit(self) -> str:
        """What ASHA counts: "epoch" or "step"."""
        return "epoch" if self.epochs is not None else "step"

    def budget(self) -> int:
        """A trial's most epochs or steps."""
        if self.epochs is not None:
            return self.epochs
        return self.steps or TARGET_STEPS

    def grace(self, budget: int) -> int:
        if self.grace_period is not None:
            if self.grace_period > budget:
                raise ConfigError(f"tune.grace_period {self.grace_period} is more than a trial's budget of {budget}"
                                  f" {self.unit}s; give a smaller --grace-period or a larger budget")
            return self.grace_period
        return max(1, budget // self.reduction_factor ** 3)

    def threads(self) -> int:
        """CPU threads per trial so that `concurrent` trials fill this machine's cores and no more."""
        return max(1, (os.cpu_count() or 1) // self.concurrent)


def read_study_toml(path: str) -> dict[str, Any]:
    """The `[tune]` table of a run's TOML (empty when there is none); the rest is the run's (config.load_toml)."""
    try:
        with open(path, "rb") as handle:
            table = tomllib.load(handle).get("tune", {})
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tune] must be a table")
    return table


def study_config(table: dict[str, Any], where: str = "[tune]", **overrides: Any) -> StudyConfig:
    """A StudyConfig from a `[tune]` table, keyword overrides (flags) winning; unknown names: one line listing
    the known ones."""
    known = [f for f in StudyConfig.__dataclass_fields__]
    for name in table:
        if name not in known:
            raise ConfigError(f"{where}: unknown setting '{name}' (known: {', '.join(known)})")
    return StudyConfig(**{**table, **{k: v for k, v in overrides.items() if v is not None}})
