"""Checkpoints: a directory of safetensors + JSON, committed by a manifest written last."""

from torchkeep.checkpoint.format import CheckpointInfo
from torchkeep.checkpoint.manager import Checkpointer, Restored

__all__ = ["CheckpointInfo", "Checkpointer", "Restored"]
