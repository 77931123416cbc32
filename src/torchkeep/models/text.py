"""TextTableMLP: text columns encoded to vectors, concatenated with a table's entity embeddings and
(batch-normalized) continuous inputs, then an MLP and a head sized for the task.

Text encoders (one per text column, each with its own vocabulary):
- "bag" (default): nn.EmbeddingBag(mode="mean", padding_idx=0), the mean of the token vectors;
  with word pairs in the vocabulary this is fastText's classifier. Fast: no [N, L, D] tensor.
- "cnn": token embeddings -> Conv1d (width 3) -> ReLU -> max over the real (non-padding) positions.
- "gru": token embeddings -> GRU -> mean of the outputs over the real positions.
Index 0 (`<pad>`) is a fixed zero vector everywhere; an all-padding row (no words) encodes to zeros.
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeep.models.tabular import entity_embeddings, mlp_stack

TEXT_ENCODERS = ("bag", "cnn", "gru")


class TextEncoder(nn.Module):
    __constants__ = ("weighted",)  # TorchScript compiles only the branch this encoder takes

    def __init__(self, vocab_size: int, dim: int, kind: str, freeze: bool = False, weighting: str = "mean") -> None:
        super().__init__()
        self.kind = kind
        self.weighted = kind == "bag" and weighting in ("idf", "sqrt")
        self.idf = kind == "bag" and weighting == "idf"
        # "idf": each token weighted by its inverse document frequency, weights scaled to unit L2 norm
        # per text (TF-IDF's weighting); the weights are a buffer set from the training split.
        # "sqrt": every token weighs 1/sqrt(tokens in the text), the sum of the vectors then has the
        # scale of an L2-normalised count vector (a long review is not shrunk as with the mean).
        self.register_buffer("token_weights", torch.ones(vocab_size) if self.weighted else torch.ones(0))
        if kind == "bag":
            mode = "sum" if self.weighted else "mean"
            self.embedding: nn.Module = nn.EmbeddingBag(vocab_size, dim, mode=mode, padding_idx=0)
        else:
            self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        # fastText's initialization (uniform +-1/dim): N(0, 1) rows made the mean of a few hundred
        # tokens dominate the other inputs at the start.
        nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.embedding.weight.requires_grad_(not freeze)
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1) if kind == "cnn" else None
        self.gru = nn.GRU(dim, dim, batch_first=True) if kind == "gru" else None
        self.output_size = dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids int32 or int64 [N, L] (0 = padding) -> float [N, dim]."""
        ids = ids.long()  # kept int32 in memory; int64 here, as ONNX's embedding-bag decomposition needs
        if not torch.jit.is_scripting() and not torch.compiler.is_compiling():
            # Eager only: cut the padding after the batch's longest text (ids are packed to the left).
            # Pads are excluded from every encoder's result, so outputs are unchanged, and a batch of
            # short reviews no longer pays for max_tokens. Traced exports keep the full width.
            ids = ids[:, : max(1, int((ids != 0).sum(dim=1).max()))]
        if self.weighted:
            weights = self.token_weights[ids] * (ids != 0)  # all ones unless IDF was set
            # (a square root of sums, not Tensor.norm: TorchScript's norm needs p as an argument)
            weights = weights / weights.pow(2).sum(dim=1, keepdim=True).sqrt().clamp(min=1e-6)
            return self.embedding(ids, per_sample_weights=weights)
        if self.conv is None and self.gru is None:
            return self.embedding(ids)
        mask = (ids != 0).unsqueeze(2)
        vectors = self.embedding(ids)
        if self.conv is not None:
            features = torch.relu(self.conv(vectors.transpose(1, 2))).transpose(1, 2)
            # Padding never wins the max; a row without words gets zeros (not -inf).
            best = features.masked_fill(~mask, float("-inf")).amax(dim=1)
            return torch.where(mask.any(dim=1), best, torch.zeros_like(best))
        assert self.gru is not None
        outputs = self.gru(vectors)[0] * mask
        return outputs.sum(dim=1) / mask.sum(dim=1).clamp(min=1)


class TextTableMLP(nn.Module):
    def __init__(
        self,
        *,
        cardinalities: list[int],
        embedding_dims: list[int],
        n_continuous: int,
        out_features: int,
        hidden_sizes: list[int],
        vocab_sizes: list[int],
        text_embedding_dim: int = 64,
        text_encoder: str = "bag",
        freeze_embeddings: bool = False,
        text_dropout: float = 0.0,
        text_weighting: str = "mean",
        dropout: float = 0.0,
        batch_norm: str = "continuous",
        embedding_dropout: float = 0.0,
        max_norm: float | None = None,
        zero_null: list[bool] | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = entity_embeddings(cardinalities, embedding_dims, zero_null, max_norm)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.text_encoders = nn.ModuleList(
            TextEncoder(n, text_embedding_dim, text_encoder, freeze_embeddings, text_weighting) for n in vocab_sizes
        )
        self.text_dropout = nn.Dropout(text_dropout)
        self.continuous_norm = (
            nn.BatchNorm1d(n_continuous) if n_continuous and batch_norm != "none" else nn.Identity()
        )
        width = sum(embedding_dims) + n_continuous + text_embedding_dim * len(vocab_sizes)
        self.mlp, width = mlp_stack(width, hidden_sizes, batch_norm, dropout)
        self.head = nn.Linear(width, out_features)
        self.out_features = out_features

    def forward(self, categorical: torch.Tensor, continuous: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        parts = [embedding(categorical[:, i]) for i, embedding in enumerate(self.embeddings)]
        x = self.embedding_dropout(torch.cat(parts, dim=1)) if parts else continuous[:, :0]
        words = [encoder(text[:, i]) for i, encoder in enumerate(self.text_encoders)]
        x = torch.cat([x, self.text_dropout(torch.cat(words, dim=1))], dim=1)
        if continuous.shape[1]:
            x = torch.cat([x, self.continuous_norm(continuous)], dim=1)
        out = self.head(self.mlp(x))
        return out.squeeze(1) if self.out_features == 1 else out

    def set_token_weights(self, column: int, weights: list[float]) -> None:
        encoder = self.text_encoders[column]
        if encoder.idf:
            encoder.token_weights.copy_(torch.tensor(weights, dtype=encoder.token_weights.dtype))

    def load_vectors(self, column: int, vectors: torch.Tensor, found: torch.Tensor) -> None:
        """Pretrained rows for the words that were `found`; the others keep their initialization."""
        weight = self.text_encoders[column].embedding.weight
        with torch.no_grad():
            weight[found] = vectors[found].to(weight.dtype)
