"""Bring a checkpoint saved with `torch.save` into torchkeep's format (safetensors + JSON + manifest).

The seed-style checkpoint dict

    torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss}, PATH)

or a bare `model.state_dict()` becomes `checkpoints/step-N/` under the target, which
`Checkpointer(target).restore(model=..., optimizer=...)` loads; every other top-level entry (epoch,
loss, ...) comes back in `Restored.extra`. The file is read weights-only: nothing in it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from torchkeep.checkpoint.format import checkpoint_name
from torchkeep.checkpoint.manager import Checkpointer
from torchkeep.checkpoint.torchfile import load_weights_only
from torchkeep.errors import CheckpointError, ConfigError

MODEL_KEY = "model_state_dict"
OPTIMIZER_KEY = "optimizer_state_dict"
SCHEDULER_KEY = "scheduler_state_dict"


@dataclass
class Converted:
    uri: str
    name: str
    step: int
    step_source: str  # where the step number came from: "--step", "optimizer", "epoch" or "none"
    tensors: int
    parameter_count: int
    optimizer: bool
    extra_keys: list[str] = field(default_factory=list)


def is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def split_checkpoint(obj: Any, uri: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state_dict, everything else) of a seed-style checkpoint dict or a bare state_dict."""
    if is_state_dict(obj):
        return obj, {}
    if isinstance(obj, dict) and MODEL_KEY in obj:
        model_state = obj[MODEL_KEY]
        if not is_state_dict(model_state):
            bad = next((k for k, v in model_state.items() if not isinstance(v, torch.Tensor)), None) \
                if isinstance(model_state, dict) else None
            what = f"its entry {bad!r} is not a tensor" if bad else f"it is a {type(model_state).__name__}"
            raise CheckpointError(f"{uri}: '{MODEL_KEY}' is not a state_dict of tensors ({what})")
        return model_state, {k: v for k, v in obj.items() if k != MODEL_KEY}
    keys = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{uri}: neither a checkpoint dict with '{MODEL_KEY}' nor a state_dict of tensors"
                          f" (found: {keys})")


def optimizer_steps(optimizer_state: Any) -> int | None:
    """The optimizer's own step count (Adam-style per-parameter `step`), when it keeps one."""
    if not isinstance(optimizer_state, dict) or not isinstance(optimizer_state.get("state"), dict):
        return None
    steps = [_number(entry.get("step")) for entry in optimizer_state["state"].values() if isinstance(entry, dict)]
    counted = [s for s in steps if s is not None and s >= 0]
    return int(max(counted)) if counted else None


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool:
        return float(value.detach().item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def convert(source: str, out: str, *, step: int | None = None) -> Converted:
    """Write `source` (.pth / .pt, local or s3://) as a torchkeep checkpoint under `out`."""
    if step is not None and step < 0:
        raise ConfigError(f"--step must be >= 0 (got {step})")
    model_state, rest = split_checkpoint(load_weights_only(source), source)
    optimizer_state = rest.pop(OPTIMIZER_KEY, None)
    scheduler_state = rest.pop(SCHEDULER_KEY, None)
    epoch = rest.get("epoch")
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    step_source = "--step"
    if step is None:
        found = optimizer_steps(optimizer_state)
        step, step_source = ((found, "optimizer") if found is not None
                             else (epoch, "epoch") if epoch is not None and epoch >= 0 else (0, "none"))
    loss = _number(rest.get("loss"))
    checkpointer = Checkpointer(out, keep_last=None, async_save=False, save_rng=False)
    existing = [info.name for info in checkpointer.list()]
    if existing:
        # Retention would treat checkpoints of another history as abandoned and delete them.
        raise ConfigError(f"{out}: already holds checkpoints ({', '.join(existing[:3])}); convert into a new directory")
    checkpointer.save_state(step, model_state=model_state, optimizer_state=optimizer_state,
                            scheduler_state=scheduler_state, epoch=epoch,
                            metrics={"loss": loss} if loss is not None else None, extra=rest)
    return Converted(
        uri=out, name=checkpoint_name(step), step=step, step_source=step_source, tensors=len(model_state),
        parameter_count=sum(t.numel() for t in model_state.values()), optimizer=optimizer_state is not None,
        extra_keys=sorted(rest),
    )
