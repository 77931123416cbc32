"""Checkpoints of a job of several processes: every rank calls `Checkpointer.save` / `restore` alike.

- Plain state (DDP, or replicated tensors): rank 0 writes today's format and the other ranks write
  nothing; `state.json` also holds every rank's RNG state (`rng_by_rank`).
- Sharded state (FSDP2's DTensors): a collective save through torch.distributed.checkpoint into the
  run's Storage (checkpoint/dcp_storage.py; the format in checkpoint/shards.py). The optimizer goes
  through torch.distributed.checkpoint.state_dict (`get_state_dict` / `set_state_dict`): keyed by
  parameter name, so it reshards. DTensors elsewhere (scheduler, loader, `extra`) are stored whole.
- Success is agreed: a failure on any rank (a full disk, S3 refusing one rank's upload) fails the
  save on every rank with a CheckpointError, nothing of it is committed, and rank 0 removes what was
  written, so the previous checkpoint stays LATEST and nothing half-written is listed.

Saves of a job of several processes are synchronous (the `async_save` setting is not applied): the
save runs collectives, which must not interleave with training's collectives from a background
thread, and its success is agreed before `save` returns. That also rules out the bug of DCP's
`async_save` that stored values of after the next optimizer step (pytorch #144657).

Restore loads either layout into a plain or a sharded model at any world size: DCP reshards a sharded
checkpoint; a plain one is distributed into DTensors with `full_state_dict=True`. The same code runs
in one process without a process group (DCP's no_dist mode).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor

from torchkeep.checkpoint import codec, format, tensors as tensor_files
from torchkeep.checkpoint.dcp_storage import ShardReader, ShardWriter
from torchkeep.checkpoint.format import STATE_FILE, STATE_TENSORS_FILE
from torchkeep.checkpoint.rng import encode_rngs, rank_and_world
from torchkeep.checkpoint.shards import LAYOUT, MODEL_PREFIX, SHARDS_FILE
from torchkeep.errors import CheckpointError, TorchkeepError
from torchkeep.storage import Storage

log = logging.getLogger("torchkeep")


def gather_to_rank0(obj: Any) -> list[Any] | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    rank, world = rank_and_world()
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def agree(error: BaseException | None, what: str) -> None:
    """Raise on every rank when any rank has an `error` (its own error on that rank)."""
    # nccl reduces CUDA tensors only; gloo (and a cpu:gloo,cuda:nccl group) CPU ones
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    failed = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
    dist.all_reduce(failed, op=dist.ReduceOp.MAX)
    if error is not None:
        raise error
    if failed.item():
        raise CheckpointError(f"{what}: failed on another rank (its log has the reason)")


def _whole(obj: Any) -> Any:
    """`obj` with every DTensor gathered whole (a collective: every rank walks the same structure)."""
    if isinstance(obj, DTensor):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: _whole(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_whole(v) for v in obj)
    return obj


def _failures(error: CheckpointException) -> str:
    return "; ".join(f"rank {rank}: {failure[0]}" for rank, failure in sorted(error.failures.items()))


def discard_uncommitted(storage: Storage, name: str) -> None:
    """Remove what a failed save wrote, unless a manifest commits it (an older save of that step)."""
    base = f"{format.PREFIX}/{name}"
    try:
        if storage.exists(f"{base}/{format.MANIFEST}"):
            return
        for key in storage.list(base):
            storage.delete(key)
        storage.delete(base)
    except TorchkeepError as error:  # it stays incomplete: listed so, never loaded
        log.warning("%s/%s: could not remove the files of a failed save: %s", storage.uri, base, error)


def save_sharded(storage: Storage, step: int, *, model: torch.nn.Module, optimizer: Any, parts: dict[str, Any],
                 rng: Any, meta: dict[str, Any], after_commit: Callable[[int], None]) -> None:
    """The collective save of sharded state (`parts`: scheduler, loader, extra state dicts; `rng`:
    this rank's RNG state or None). Returns once committed on every rank, else raises on every rank."""
    rank, world = rank_and_world()
    name = format.checkpoint_name(step)
    where = f"{storage.uri}/{format.PREFIX}/{name}"
    own_files: dict[str, format.Buffers] = {}
    error: TorchkeepError | None = None
    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer)
    else:
        model_state, optim_state = get_model_state_dict(model), None
    flat = {f"{MODEL_PREFIX}{k}": v for k, v in model_state.items()}
    optimizer_json = None if optim_state is None else codec.encode(optim_state, flat, "optimizer", copy=False, to_cpu=False)
    parts = _whole(parts)
    rngs = gather_to_rank0(rng)
    if rank == 0:
        try:
            tensors: dict[str, torch.Tensor] = {}
            state = {"step": step, "epoch": meta.get("epoch"), "metrics": meta.get("metrics", {}), "optimizer": optimizer_json}
            state.update({k: codec.encode(v, tensors, k, copy=False) for k, v in parts.items()})
            state.update(encode_rngs(rngs, tensors))
            own_files = {STATE_TENSORS_FILE: tensor_files.encode(tensors), STATE_FILE: json.dumps(state).encode()}
        except TorchkeepError as failure:
            error = failure
    agree(error, f"{where}: not saved")

    def commit(entries: dict[str, dict[str, Any]]) -> None:
        format.commit(storage, name, entries, {**meta, "layout": LAYOUT, "world_size": world})
        after_commit(step)

    writer = ShardWriter(storage, name, rank, world, own_files, commit if rank == 0 else None)
    try:
        dcp.save(flat, storage_writer=writer)
    except CheckpointException as failure:
        if rank == 0:
            discard_uncommitted(storage, name)
        dist.barrier()
        raise CheckpointError(f"{where}: not saved, the previous checkpoint stays the latest ({_failures(failure)})") from failure


def load_sharded(storage: Storage, name: str, manifest: dict[str, Any], files: dict[str, Any],
                 model: torch.nn.Module | None, optimizer: Any,
                 strict: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str], list[str]]:
    """Load a sharded checkpoint's model and optimizer in place (any world size, with or without a
    process group). `files`: its files but the shards, verified. Returns state.json, the tensors it
    refers to, and the missing / unexpected model keys."""
    where = f"{storage.uri}/{format.PREFIX}/{name}"
    try:
        state, layout = json.loads(files[STATE_FILE]), json.loads(files[SHARDS_FILE])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{where}: missing or unreadable {STATE_FILE} / {SHARDS_FILE}") from error
    tensors = tensor_files.decode(files[STATE_TENSORS_FILE], f"{where}/{STATE_TENSORS_FILE}") if STATE_TENSORS_FILE in files else {}
    if model is None:
        if optimizer is not None:
            raise CheckpointError(f"{where}: a sharded checkpoint's optimizer state is keyed by parameter name: pass model= too")
        return state, tensors, [], []
    if optimizer is not None:
        model_state, optim_state = get_state_dict(model, optimizer)
    else:
        model_state, optim_state = get_model_state_dict(model), None
    saved = {fqn.removeprefix(MODEL_PREFIX): entry for fqn, entry in layout["tensors"].items() if fqn.startswith(MODEL_PREFIX)}
    missing, unexpected = sorted(set(model_state) - set(saved)), sorted(set(saved) - set(model_state))
    if strict and (missing or unexpected):
        raise CheckpointError(f"{where}: model keys do not match (missing: {missing[:5]}, unexpected: {unexpected[:5]});"
                              " pass strict=False")
    for key, value in model_state.items():
        if key in saved and list(value.shape) != saved[key]["size"]:
            raise CheckpointError(f"{where}: '{key}' has shape {tuple(saved[key]['size'])}, the model expects {tuple(value.shape)}")
    targets = {f"{MODEL_PREFIX}{k}": v for k, v in model_state.items() if k in saved}
    if optim_state is not None:
        if state.get("optimizer") is None:
            raise CheckpointError(f"{where}: holds no optimizer state")
        optim_targets: dict[str, torch.Tensor] = {}
        codec.encode(optim_state, optim_targets, "optimizer", copy=False, to_cpu=False)
        absent = sorted(set(optim_targets) - set(layout["tensors"]))
        if absent:
            raise CheckpointError(f"{where}: optimizer state does not fit: the checkpoint lacks {absent[:3]}")
        targets.update(optim_targets)
    try:
        with warnings.catch_warnings():  # one process, no process group: DCP's own single-process mode, on purpose
            warnings.filterwarnings("ignore", message="torch.distributed is .*uninitialized")
            dcp.load(targets, storage_reader=ShardReader(storage, name, manifest, layout))
    except CheckpointException as failure:
        raise CheckpointError(f"{where}: cannot be loaded ({_failures(failure)})") from failure
    options = StateDictOptions(strict=False)
    if optim_state is None:
        set_model_state_dict(model, model_state, options=options)
    else:
        saved_optimizer = codec.decode(state["optimizer"], {**tensors, **optim_targets})
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=saved_optimizer, options=options)
    return state, tensors, missing, unexpected


def load_whole_into_sharded(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Whole weights (a plain checkpoint, read by every rank) into a model whose state is DTensors."""
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def load_optimizer_into_sharded(model: torch.nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """A plain checkpoint's optimizer state (keyed by position, as `optimizer.state_dict()` keys it) into
    the optimizer of a model whose state is DTensors: the positions become parameter names first."""
    names = {id(parameter): fqn for fqn, parameter in model.named_parameters()}
    fqns = [names[id(parameter)] for group in optimizer.param_groups for parameter in group["params"]]
    by_name = {"state": {fqns[index]: value for index, value in state["state"].items()},
               "param_groups": [{**group, "params": [fqns[index] for index in group["params"]]} for group in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True, strict=False))
