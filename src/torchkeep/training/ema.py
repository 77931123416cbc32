"""An exponential moving average (EMA) of a model's weights, kept beside the model that trains.

After every optimizer step: ema = decay * ema + (1 - decay) * weights (the first step copies the
weights). Averaging the last ~1 / (1 - decay) steps smooths out the noise of the final steps, which
often generalises a little better than the last weights. torch's own AveragedModel does the work
(`get_ema_multi_avg_fn`, one fused lerp per dtype); buffers are averaged too (`use_buffers=True`), so
BatchNorm running statistics of the average are the average's own, not the raw model's of the last
batch (integer buffers such as `num_batches_tracked` are averaged and truncated, which nothing reads
unless BatchNorm's momentum is None).

A checkpoint keeps the average in its state (`extra["ema"]`: the decay, the steps averaged and the
averaged tensors, stored in state.safetensors like the optimizer's); `model.safetensors` stays the raw
weights that the optimizer state belongs to, so a resume continues both exactly.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from torchkeep.checkpoint import codec
from torchkeep.checkpoint.format import STATE_FILE, STATE_TENSORS_FILE
from torchkeep.checkpoint.shards import state_tensors
from torchkeep.errors import CheckpointError

log = logging.getLogger("torchkeep")

class WeightAverage:
    """The EMA of `model`'s parameters and buffers; `module` is a model of the same class holding it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        for parameter in self.averaged.parameters():  # never trained: no gradients kept for it
            parameter.requires_grad_(False)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def steps(self) -> int:
        """Optimizer steps averaged so far."""
        return int(self.averaged.n_averaged)

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "steps": self.steps, "weights": self.weights()}

    def load_state_dict(self, state: dict[str, Any] | None, where: str) -> None:
        if state is None:
            raise CheckpointError(
                f"{where}: holds no EMA weights (it was saved by a run without ema_decay); resume it with"
                " ema_decay unset, or start a new run to train with an EMA")
        if state["decay"] != self.decay:
            log.warning("%s: EMA saved with decay %s, continuing with decay %s", where, state["decay"], self.decay)
        self.module.load_state_dict(state["weights"])
        self.averaged.n_averaged.fill_(int(state["steps"]))


def ema_weights(extra: dict[str, Any] | None) -> dict[str, torch.Tensor] | None:
    """The EMA weights a checkpoint holds (its `Restored.extra`), or None when it was saved without one."""
    state = (extra or {}).get("ema")
    return None if state is None else state["weights"]


def ema_weights_in_files(files: dict[str, bytes], where: str) -> dict[str, torch.Tensor] | None:
    """`ema_weights` from a checkpoint's files as `checkpoint.format.read_checkpoint` returns them."""
    if STATE_FILE not in files or STATE_TENSORS_FILE not in files:
        return None
    extra = json.loads(files[STATE_FILE]).get("extra") or {}
    if "ema" not in extra:
        return None
    tensors = state_tensors(files, where)
    return ema_weights({"ema": codec.decode(extra["ema"], tensors)})
