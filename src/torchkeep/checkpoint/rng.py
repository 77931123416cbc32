"""Capture and restore every random number generator a training run draws from, on every rank of a job."""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from torchkeep.checkpoint import codec

log = logging.getLogger("torchkeep")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def encode_rngs(rngs: list[Any] | None, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """state.json entries for every rank's RNG state: `rng` is rank 0's (what one process restores)."""
    if rngs is None or rngs[0] is None:
        return {"rng": None}
    return {"rng": codec.encode(rngs[0], tensors, "rng", copy=False),
            "rng_by_rank": [codec.encode(r, tensors, f"rng_by_rank.{i}", copy=False) for i, r in enumerate(rngs)]}


def rng_of_this_rank(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Any:
    """This rank's saved RNG state; rank 0's in one process; None (with a note) for a rank the saving job lacked."""
    rank, world = rank_and_world()
    by_rank = state.get("rng_by_rank")
    if by_rank is not None and world > 1 and rank < len(by_rank):
        return codec.decode(by_rank[rank], tensors)
    if rank == 0:
        return codec.decode(state.get("rng"), tensors)
    log.info("rank %d: the checkpoint holds no RNG state of this rank; its generators keep their seed", rank)
    return None
