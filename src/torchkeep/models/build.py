"""build_model: config + fitted schema -> nn.Module, by an explicit match (no registry)."""

from __future__ import annotations

from typing import Any

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


def tabular_model_args(config: TabularModelConfig, schema: TableSchema) -> dict[str, Any]:
    """The constructor arguments, all plain JSON values: saved so a model is rebuilt without its run."""
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
        "batch_norm": config.batch_norm,
        "embedding_dropout": config.embedding_dropout,
        "max_norm": config.max_norm,
        "zero_null": [
            config.null_embedding == "zero" or (config.null_embedding == "auto" and not c.has_nulls)
            for c in schema.categorical
        ],
    }


def text_model_args(config: TabularModelConfig, schema: TableSchema, embedding_dim: int | None = None) -> dict[str, Any]:
    """tabular_model_args plus the text columns' encoders; `embedding_dim` from pretrained vectors."""
    return {
        **tabular_model_args(config, schema),
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


def loss_for_task(task: str) -> nn.Module:
    match task:
        case "binary":
            return nn.BCEWithLogitsLoss()
        case "multiclass":
            return nn.CrossEntropyLoss()
        case "regression":
            return nn.MSELoss()
        case _:
            raise ConfigError(f"unknown task {task!r} (expected binary, multiclass or regression)")
