"""The sharded checkpoint format, and whole tensors out of it for readers that run in one process.

A checkpoint saved from sharded state (FSDP2's DTensors) holds, in the same `checkpoints/step-N/`:

    shard-00000-of-00002.safetensors   the chunks rank 0 wrote (one file per rank that wrote any),
                                       each tensor named `FQN@OFFSETS` (`model.fc.weight@0,0`)
    shards.json      every tensor's dtype, global size and chunks (offsets, sizes, file): the layout
                     torch.distributed.checkpoint planned, as JSON (no pickle)
    state.json, state.safetensors   as in a plain checkpoint (written by rank 0), the optimizer's JSON
                     part keyed by parameter name, its tensors referring to `optimizer.state.FQN.NAME`
    MANIFEST.json    written last, by rank 0, once every rank's files are written: size and sha256 of
                     every file above, and `"layout": "sharded"`, `"world_size": N`

Tensors are named `model.FQN` (the weights) and `optimizer.state.FQN.NAME`. Nothing here needs
torch.distributed: `assemble` rebuilds whole tensors from the files (verified against the manifest by
`format.read_checkpoint`), so `inspect`, `predict`, transfer learning and the rest read a sharded
checkpoint in one plain process exactly as they read a plain one.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from torchkeep.checkpoint import tensors as tensor_files
from torchkeep.checkpoint.format import MODEL_FILE, STATE_TENSORS_FILE
from torchkeep.errors import CheckpointError

SHARDS_FILE = "shards.json"
LAYOUT = "sharded"
MODEL_PREFIX = "model."


def shard_file(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}.safetensors"


def is_shard_file(file_name: str) -> bool:
    return file_name.startswith("shard-") and file_name.endswith(".safetensors")


def chunk_key(fqn: str, offsets: Any) -> str:
    """The name of one chunk of tensor `fqn` in a shard file: unique across the checkpoint."""
    return f"{fqn}@{','.join(str(int(o)) for o in offsets)}"


def is_sharded(manifest: dict[str, Any]) -> bool:
    return manifest.get("layout") == LAYOUT


def assemble(layout: dict[str, Any], files: dict[str, Any], where: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """Whole tensors (those named `prefix...`) from the chunks in the shard files' bytes."""
    decoded: dict[str, dict[str, torch.Tensor]] = {}
    out = {}
    for fqn, entry in layout["tensors"].items():
        if not fqn.startswith(prefix):
            continue
        try:
            whole = torch.empty(entry["size"], dtype=tensor_files.FROM_NAME[entry["dtype"]])
            covered = 0
            for chunk in entry["chunks"]:
                name = chunk["file"]
                if name not in decoded:
                    decoded[name] = tensor_files.decode(files[name], f"{where}/{name}")
                region = whole
                for dim, (offset, size) in enumerate(zip(chunk["offsets"], chunk["sizes"])):
                    region = region.narrow(dim, offset, size)
                region.copy_(decoded[name][chunk_key(fqn, chunk["offsets"])])
                covered += region.numel()
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise CheckpointError(f"{where}/{SHARDS_FILE}: tensor '{fqn}' cannot be rebuilt from its chunks ({error!r})") from error
        if covered != whole.numel():
            raise CheckpointError(f"{where}/{SHARDS_FILE}: the chunks of '{fqn}' cover {covered} of its {whole.numel()} values")
        out[fqn] = whole
    return out


def model_weights(files: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """The whole model state dict of a checkpoint's files (`format.read_checkpoint`), plain or sharded."""
    if MODEL_FILE in files:
        return tensor_files.decode(files[MODEL_FILE], f"{where}/{MODEL_FILE}")
    if SHARDS_FILE in files:
        whole = assemble(json.loads(files[SHARDS_FILE]), files, where, MODEL_PREFIX)
        return {fqn.removeprefix(MODEL_PREFIX): tensor for fqn, tensor in whole.items()}
    raise CheckpointError(f"{where}: holds no model weights")


def state_tensors(files: dict[str, Any], where: str) -> dict[str, torch.Tensor]:
    """Every tensor `state.json` refers to: state.safetensors, plus the sharded ones (optimizer state)."""
    tensors = (tensor_files.decode(files[STATE_TENSORS_FILE], f"{where}/{STATE_TENSORS_FILE}")
               if STATE_TENSORS_FILE in files else {})
    if SHARDS_FILE in files:
        whole = assemble(json.loads(files[SHARDS_FILE]), files, where)
        tensors.update({fqn: tensor for fqn, tensor in whole.items() if not fqn.startswith(MODEL_PREFIX)})
    return tensors
