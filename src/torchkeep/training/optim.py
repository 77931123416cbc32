"""Optimizers and learning-rate schedules, chosen by name from config."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from torchkeep.errors import ConfigError

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("onecycle", "constant", "cosine")


@dataclass(kw_only=True)
class OptimConfig:
    optimizer: str = "adamw"
    # The peak learning rate under one-cycle. 3e-3 over the step budget (training/budget.py) beat 1e-2 and
    # 1e-3 on the tabular suite's small tables (bench/README.md); 1e-2 suited 3 epochs of batch 1024.
    lr: float = 3e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9  # sgd only
    schedule: str = "onecycle"
    warmup_fraction: float = 0.25  # one-cycle: share of steps spent rising to `lr`

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optim.optimizer must be one of {', '.join(OPTIMIZERS)} (got {self.optimizer!r})")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0 (got {self.weight_decay})")
        if not 0 < self.warmup_fraction < 1:
            raise ConfigError(f"optim.warmup_fraction must be in (0, 1) (got {self.warmup_fraction})")


def build_optimizer(config: OptimConfig, parameters: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]
                    ) -> torch.optim.Optimizer:
    """Over the parameters that need gradients, or over param groups (dicts with their own "lr")."""
    params: list[Any] = [p for p in parameters if isinstance(p, dict) or p.requires_grad]
    match config.optimizer:
        case "adamw":
            return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        case "adam":
            return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        case "sgd":
            return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise AssertionError(config.optimizer)


def build_scheduler(
    config: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    match config.schedule:
        case "onecycle":
            total_steps = max(total_steps, 2)
            if float(config.warmup_fraction * total_steps) == 1:  # OneCycleLR divides by zero there (4 steps
                total_steps += 1  # at 0.25): one step more in the schedule than the run takes, not a crash
            return torch.optim.lr_scheduler.OneCycleLR(
                # One peak per param group: each group's own base rate (transfer learning scales some).
                optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=total_steps,
                pct_start=config.warmup_fraction,
            )
        case "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        case "constant":
            return None
    raise AssertionError(config.schedule)
