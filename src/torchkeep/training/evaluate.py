"""Devices, one batch's forward in either batch convention, and evaluation over a whole loader.

With more than one process, `evaluate` may run on a share of the batches in each rank
(`share=(rank, world)`): the outputs are gathered, so the loss and metrics are those of the whole
validation set, as one process computes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from torchkeep.distributed import gather_rows
from torchkeep.errors import ConfigError
from torchkeep.training.metrics import MetricFn


def check_device(name: str, *, available: bool = True) -> None:
    """A device name torch knows, and (`available`) one this machine has. Runs check it before they write
    anything; a config is only checked by name, so a run trained on a GPU still reports and loads on a laptop."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps (got {name!r})") from None
    if not available:
        return
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name}: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu, or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name}: this torch has no MPS (Apple GPU) backend; use --device cpu, or auto")


def resolve_device(name: str) -> torch.device:
    check_device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def forward(model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, target) for one batch in either batch convention."""
    if isinstance(batch, dict):
        inputs = {k: _to(v, device) for k, v in batch.items() if k != "target"}
        return model(**inputs), _to(batch["target"], device)
    inputs, target = batch
    return model(_to(inputs, device)), _to(target, device)


@torch.no_grad()
def predict_outputs(model: nn.Module, loader: Iterable[Any], device: torch.device,
                    share: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, targets) of every batch; with `share=(rank, world)`, of this rank's batches (every world-th),
    gathered from all ranks."""
    model.eval()
    rank, world = share
    outputs, targets = [], []
    for index, batch in enumerate(loader):
        if index % world != rank:
            continue
        output, target = forward(model, batch, device)
        outputs.append(output.float().cpu())
        targets.append(target.cpu())
    if world == 1:
        return torch.cat(outputs), torch.cat(targets)
    sample_output, sample_target = forward(model, next(iter(loader)), device) if not outputs else (outputs[0], targets[0])
    output = torch.cat(outputs) if outputs else sample_output[:0].float().cpu()
    target = torch.cat(targets) if targets else sample_target[:0].cpu()
    return gather_rows(output), gather_rows(target)


def evaluate(model: nn.Module, loss_fn: Callable[..., torch.Tensor], loader: Iterable[Any],
             metrics_fn: MetricFn | None = None, device: torch.device | str = "cpu",
             share: tuple[int, int] = (0, 1)) -> dict[str, float]:
    """Loss and metrics over a whole loader, computed once on all outputs (not averaged per batch)."""
    outputs, targets = predict_outputs(model, loader, torch.device(device), share)
    metrics = {"loss": loss_fn(outputs, targets).item()}
    if metrics_fn is not None:
        metrics.update(metrics_fn(outputs, targets))
    return metrics
