"""Nested Python state (optimizer, scheduler, loader, RNG) as JSON plus a dict of tensors, never a pickle.

Tensors are pulled out into a flat dict (saved as safetensors) and replaced by {"__tensor__": key};
tuples and dicts with non-string keys (an optimizer's `state` is keyed by int) are tagged so that
they come back with the same types.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchkeep.errors import CheckpointError


def encode(obj: Any, tensors: dict[str, torch.Tensor], path: str = "", copy: bool = True, to_cpu: bool = True) -> Any:
    """JSON-ready copy of `obj`; every tensor goes (detached, on CPU unless not `to_cpu`, copied if
    `copy`) into `tensors`. Sharded tensors (DTensors) stay where they are: `to_cpu=False`."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=copy) if to_cpu else obj.detach()
        return {"__tensor__": path}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode(v, tensors, f"{path}.{k}" if path else k, copy, to_cpu) for k, v in obj.items()}
        return {
            "__items__": [
                [encode(k, tensors, f"{path}.k{i}", copy, to_cpu), encode(v, tensors, f"{path}.{k}", copy, to_cpu)]
                for i, (k, v) in enumerate(obj.items())
            ]
        }
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, tensors, f"{path}.{i}", copy, to_cpu) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, tensors, f"{path}.{i}", copy, to_cpu) for i, v in enumerate(obj)]
    raise CheckpointError(
        f"cannot store a {type(obj).__name__} at '{path}' in a checkpoint"
        " (only tensors, numbers, strings, lists, tuples and dicts are stored)"
    )


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        key = obj["__tensor__"]
        if key not in tensors:
            raise CheckpointError(f"checkpoint state refers to tensor '{key}', which is not stored")
        return tensors[key]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {decode(k, tensors): decode(v, tensors) for k, v in obj["__items__"]}
    return {k: decode(v, tensors) for k, v in obj.items()}
