"""build_model: config + fitted schema -> nn.Module, by an explicit match (no registry)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchkeep.data.table import TableSchema
from torchkeep.errors import ConfigError
from torchkeep.models.imported import rebuild
from torchkeep.models.tabular import (
    EntityEmbeddingMLP,
    TabularModelConfig,
    default_embedding_dim,
)
from torchkeep.models.text import TextTableMLP
from torchkeep.models.vision import ImageMLP, SmallCNN


# Periodic embeddings (--numeric-encoding periodic): k frequencies started at N(0, sigma^2) on the
# robust-scaled values (which lie in (-3, 3)), mapped to `dim` numbers per column: RealMLP-TD's
# untuned sigma (0.1) for such inputs, and a small width so that wide tables stay cheap.
PERIODIC = {"frequencies": 8, "dim": 8, "sigma": 0.1}


def periodic_positions(schema: TableSchema) -> list[int]:
    """Where each continuous column's scaled value sits among the model's continuous inputs."""
    positions, at = [], 0
    for column in schema.continuous:
        positions.append(at)
        at += column.width
    return positions


def tabular_model_args(config: TabularModelConfig, schema: TableSchema,
                       numeric_encoding: str = "none") -> dict[str, Any]:
    """The constructor arguments, all plain JSON values: saved so a model is rebuilt without its run.
    `numeric_encoding` "periodic" or "ple+periodic" adds the periodic embeddings of the continuous columns."""
    assert schema.target is not None
    unknown = set(config.embedding_dims) - {c.name for c in schema.categorical}
    if unknown:
        raise ConfigError(f"model.embedding_dims names column(s) that are not categorical: {sorted(unknown)}")
    return {
        "cardinalities": schema.cardinalities,
        "embedding_dims": [
            config.embedding_dims.get(c.name, default_embedding_dim(c.cardinality, config.max_embedding_dim))
            for c in schema.categorical
        ],
        "n_continuous": schema.n_continuous_inputs,
        "out_features": schema.target.output_size,
        "hidden_sizes": list(config.hidden_sizes),
        "dropout": config.dropout,
        **({"ensemble_size": config.ensemble_size} if config.ensemble_size > 1 else {}),
        "batch_norm": config.batch_norm,
        "embedding_dropout": config.embedding_dropout,
        "max_norm": config.max_norm,
        "zero_null": [
            config.null_embedding == "zero" or (config.null_embedding == "auto" and not c.has_nulls)
            for c in schema.categorical
        ],
        **({"periodic": {"positions": periodic_positions(schema), **PERIODIC}}
           if numeric_encoding.endswith("periodic") and schema.continuous else {}),
    }


def text_model_args(config: TabularModelConfig, schema: TableSchema, embedding_dim: int | None = None) -> dict[str, Any]:
    """tabular_model_args plus the text columns' encoders; `embedding_dim` from pretrained vectors."""
    args = tabular_model_args(config, schema)
    args.pop("ensemble_size", None)  # the text model is one MLP
    return {
        **args,
        "vocab_sizes": [len(c.vocab) for c in schema.text],
        "text_embedding_dim": embedding_dim or config.text_embedding_dim,
        "text_encoder": config.text_encoder,
        "freeze_embeddings": config.freeze_embeddings,
        "text_dropout": config.text_dropout,
        "text_weighting": config.text_weighting,
    }


def build_model(architecture: str, args: dict[str, Any]) -> nn.Module:
    match architecture:
        case "entity_embedding_mlp":
            return EntityEmbeddingMLP(**args)
        case "python":  # a user's own class, {"import": "module:QualName", "args": {...}}: imported only here
            return rebuild(args)
        case "image_cnn":
            return SmallCNN(**args)
        case "image_mlp":
            return ImageMLP(**args)
        case "text_table_mlp":
            return TextTableMLP(**args)
        case _:
            raise ConfigError(f"unknown model architecture {architecture!r}"
                              " (known: entity_embedding_mlp, text_table_mlp, image_cnn, image_mlp, python)")


class TaskLoss(nn.Module):
    """The task's loss. Outputs with a member dimension ([N, k] or [N, k, classes], an ensemble in
    training) get one loss per member, averaged. `label_smoothing` (classification): targets move
    that far towards uniform (binary: y * (1 - e) + e / 2)."""

    def __init__(self, task: str, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if task not in ("binary", "multiclass", "regression"):
            raise ConfigError(f"unknown task {task!r} (expected binary, multiclass or regression)")
        self.task, self.label_smoothing = task, label_smoothing

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.task == "multiclass":
            if output.dim() == 3:  # [N, k, classes]
                output, target = output.flatten(0, 1), target.repeat_interleave(output.shape[1])
            return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)
        if output.dim() == target.dim() + 1:  # [N, k] against [N]
            target = target.unsqueeze(1).expand_as(output)
        if self.task == "binary":
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + self.label_smoothing / 2
            return F.binary_cross_entropy_with_logits(output, target)
        return F.mse_loss(output, target)


def loss_for_task(task: str, label_smoothing: float = 0.0) -> nn.Module:
    return TaskLoss(task, label_smoothing)
