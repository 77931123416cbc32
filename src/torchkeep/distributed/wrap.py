"""The model under a strategy: DistributedDataParallel (ddp) or FSDP2's fully_shard (fsdp).

`wrap` returns what the loop needs: the module to call for training forwards, the module whose
parameters the optimizer steps and the checkpoint saves, and when gradients are synchronised
(gradient accumulation: only at the last micro-batch of a group). At the end `gather_into` leaves the
caller's plain model holding the trained, unsharded weights on every rank. FSDP2 and
torch.distributed.checkpoint are imported when first used (they take most of a second to import).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchkeep.distributed.env import current
from torchkeep.errors import ConfigError

STRATEGIES = ("ddp", "fsdp")


@dataclass
class Wrapped:
    forward_module: nn.Module  # called for training forwards: the DDP wrapper, the sharded module, or the model
    module: nn.Module  # trained and checkpointed: the model itself (one process, ddp) or its sharded copy (fsdp)
    strategy: str | None  # None: one process

    @property
    def sharded(self) -> bool:
        """Whether the state dict holds DTensor shards (fsdp), not whole tensors."""
        return self.strategy == "fsdp"

    @contextmanager
    def micro_batch(self, final: bool) -> Iterator[None]:
        """Forward and backward of one micro-batch: gradients all-reduced only at the `final` one of a
        group (DDP's no_sync; FSDP2's requires_gradient_sync), as one process accumulates them."""
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(final)  # type: ignore[operator]
        context = self.forward_module.no_sync() if self.strategy == "ddp" and not final else nullcontext()
        with context:  # type: ignore[attr-defined]
            yield


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be ddp or fsdp (got {strategy!r}): ddp keeps a whole model in every"
                          " process, fsdp (FSDP2 fully_shard) splits parameters, gradients and optimizer state")


def wrap(model: nn.Module, strategy: str, device: torch.device) -> Wrapped:
    """`model` (already on `device`) under `strategy` when this process is one of several, else as it is."""
    check_strategy(strategy)
    if not current().distributed:
        return Wrapped(model, model, None)
    if strategy == "ddp":
        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        return Wrapped(ddp, model, "ddp")
    from torch.distributed.fsdp import fully_shard

    sharded = copy.deepcopy(model)  # the caller's model stays plain: it receives the gathered weights at the end
    # The loop never changes a model's output in place, the one case that warning is about.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    for child in _shard_units(sharded):
        fully_shard(child)
    fully_shard(sharded)
    return Wrapped(sharded, sharded, "fsdp")


def _shard_units(module: nn.Module) -> list[nn.Module]:
    """The submodules sharded on their own (each gathered only around its forward): the root's children
    with parameters, looking inside ModuleList / ModuleDict, which are never called themselves."""
    units: list[nn.Module] = []
    for child in module.children():
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            units += [grand for grand in child.children() if any(True for _ in grand.parameters())]
        elif any(True for _ in child.parameters()):
            units.append(child)
    return units


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unsharded) state dict on every rank, on the CPU; a collective for a sharded module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    if isinstance(module, FSDPModule):
        options = StateDictOptions(full_state_dict=True, cpu_offload=False)
        return {k: v.cpu() for k, v in get_model_state_dict(module, options=options).items()}
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def gather_into(model: nn.Module, wrapped: Wrapped) -> None:
    """The trained weights into the caller's `model` (a no-op when it was trained itself)."""
    if wrapped.module is not model:
        model.load_state_dict(full_state_dict(wrapped.module))


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows of `tensor`, rank 0's first (rank counts may differ): on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    is_bool = tensor.dtype == torch.bool
    local = tensor.to(torch.uint8) if is_bool else tensor
    backend_device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    local = local.to(backend_device)
    sizes = [torch.zeros(1, dtype=torch.long, device=backend_device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(local)], device=backend_device))
    longest = int(max(size.item() for size in sizes))
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=backend_device)
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    rows = torch.cat([part[: int(size.item())] for part, size in zip(parts, sizes)]).cpu()
    return rows.bool() if is_bool else rows


def eval_share(strategy: str | None) -> tuple[int, int]:
    """(rank, world) for validation: each rank evaluates every world-th batch and the outputs are gathered;
    a sharded model runs every batch on every rank instead (its forwards are collectives)."""
    env = current()
    if strategy == "fsdp" or not env.distributed:
        return 0, 1
    return env.rank, env.world_size


def refuse_unsupported(strategy: str, *, ema: bool, transfer: bool) -> None:
    if not current().distributed or strategy != "fsdp":
        return
    if ema:
        raise ConfigError("ema_decay is not supported with strategy fsdp (the average would need its own sharded"
                          " copy); use strategy ddp, or no ema_decay")
    if transfer:
        raise ConfigError("freeze / unfreeze_at / backbone_lr_mult are not supported with strategy fsdp; use strategy"
                          " ddp for transfer learning")


def describe(strategy: str | None) -> dict[str, Any]:
    """What run.json records of how a session ran."""
    env = current()
    return {"world_size": env.world_size, "strategy": strategy if env.distributed else None}
