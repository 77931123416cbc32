"""Losses by name for `torchkeep.fit`, and the one default that can be read off the targets.

Each named loss fits the model's output to the target's shape first ([N, 1] against [N] is the
usual slip, and broadcasting it silently gives a wrong MSE), and says in one line what it expected
when the shapes cannot match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from torchkeep.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# The task whose metrics (training/metrics.py) go with each named loss.
TASKS = {"cross_entropy": "multiclass", "bce": "binary", "mse": "regression"}


def _shape(tensor: torch.Tensor) -> str:
    return f"[{', '.join(map(str, tensor.shape))}]"


def _matched(output: torch.Tensor, target: torch.Tensor, name: str) -> torch.Tensor:
    if output.shape == target.shape:
        return output
    if output.numel() != target.numel():
        raise ConfigError(f"loss {name!r} needs one output per target value: the model gave {_shape(output)} for"
                          f" targets {_shape(target)}")
    return output.reshape(target.shape)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if output.ndim < 2 or output.shape[1] < 2:
        raise ConfigError(f"loss 'cross_entropy' needs one logit per class ([N, classes]); the model gave"
                          f" {_shape(output)}: for a single logit and 0/1 targets pass loss='bce'")
    return F.cross_entropy(output, target.long())


def bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on logits (BCEWithLogitsLoss); targets 0/1 of any dtype."""
    target = target.to(output.dtype) if output.is_floating_point() else target.float()
    return F.binary_cross_entropy_with_logits(_matched(output, target, "bce"), target)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(_matched(output, target, "mse"), target.to(output.dtype))


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "bce": bce, "mse": mse}


def named_loss(name: str) -> LossFn:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r} (known: {', '.join(LOSSES)}; or pass a callable (output, target) -> loss)")
    return LOSSES[name]


def infer_loss(target: torch.Tensor, *, seen: str) -> str:
    """The loss the targets imply, where they leave no doubt: integer class labels -> cross_entropy,
    booleans -> bce, floats that are not all 0/1 -> mse. Floats that are all 0 or 1 could be either
    binary labels or a regression target: then the loss must be named. `seen` says which targets
    these are, for the message ("all 60,000 targets", "the first 256 targets")."""
    if target.dtype == torch.bool:
        return "bce"
    if target.is_complex():
        raise ConfigError(f"{seen} are complex numbers: pass a loss callable (output, target) -> loss")
    if not target.is_floating_point():
        return "cross_entropy"
    if bool(((target == 0) | (target == 1)).all()):
        raise ConfigError(f"{seen} are 0.0 or 1.0: pass loss='bce' for binary classification or loss='mse' for"
                          " regression (or any callable (output, target) -> loss)")
    return "mse"
