"""TrainState: what fit() must remember across a restart, beyond model/optimizer/loader/RNG."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epochs: int = 0  # total epochs this run trains for (resolved once)
    best_value: float | None = None
    best_step: int | None = None
    bad_evaluations: int = 0  # validations in a row without improvement (early stopping)
    stopped_early: bool = False
    anneal_start: int | None = None  # the step annealing after a stall began (training/anneal.py)
    anneal_steps: int = 0  # its length in steps
    anneal_lr: list[float] = field(default_factory=list)  # the learning rates it decays from, per param group
    train_seconds: float = 0.0
    last_valid: dict[str, float] = field(default_factory=dict)
    best_valid: dict[str, float] = field(default_factory=dict)  # validation metrics at best_step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        return cls(**data)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
