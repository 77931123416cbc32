"""A user's own models and data, as the torchkeep.fit tests train them.

A module of its own, so that bundles name the classes `own_models:SmallImageNet` and so on, and a
subprocess with this directory on PYTHONPATH rebuilds them the way a user's other process would.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

CLASSES = 3


def blobs(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiny 1x4x4 "images" of three classes, each class a noisy pattern: (images, int64 labels)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, CLASSES, (rows,), generator=generator)
    patterns = torch.tensor([[1.0] * 8 + [0.0] * 8, [0.0] * 8 + [1.0] * 8, [1.0, 0.0] * 8]).reshape(CLASSES, 1, 4, 4)
    return patterns[labels] + 0.4 * torch.randn(rows, 1, 4, 4, generator=generator), labels


class SmallImageNet(nn.Module):
    """The seeds' NeuralNetwork (Flatten -> Linear -> ReLU -> ... -> Linear), small, with dropout so
    that a resume must bring the RNG back too. Its constructor takes no arguments."""

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.layers = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.flatten(x))


class Widths(nn.Module):
    """Constructor arguments kept as attributes of the same name: torchkeep reads them back."""

    def __init__(self, in_features: int, hidden: int = 16, classes: int = CLASSES) -> None:
        super().__init__()
        self.in_features, self.hidden, self.classes = in_features, hidden, classes
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Opaque(nn.Module):
    """A required constructor argument that the model does not keep: torchkeep cannot know it."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.ReLU(), nn.Linear(width, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TwoInputs(nn.Module):
    """A model called by name: `model(pixels=..., hour=...)`, an image and an integer code."""

    def __init__(self) -> None:
        super().__init__()
        self.hour = nn.Embedding(24, 4)
        self.layers = nn.Sequential(nn.Linear(16 + 4, 16), nn.ReLU(), nn.Linear(16, CLASSES))

    def forward(self, pixels: torch.Tensor, hour: torch.Tensor) -> torch.Tensor:
        return self.layers(torch.cat([pixels.flatten(1), self.hour(hour)], dim=1))


class BlobDataset(Dataset):
    """The seeds' Dataset style: one (image, label) pair per __getitem__."""

    def __init__(self, rows: int, seed: int) -> None:
        self.images, self.labels = blobs(rows, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class PairInput(nn.Module):
    """A model called with one tuple of tensors, `model((left, right))`: trained fine, but its inputs are not one
    tensor or a dict of tensors, so there is nothing to check requests or files against."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Linear(8, CLASSES)

    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.layers(torch.cat(pair, dim=1))


class PairDataset(Dataset):
    """Items `((left, right), label)` for PairInput."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        generator = torch.Generator().manual_seed(index)
        return (torch.randn(4, generator=generator), torch.randn(4, generator=generator)), torch.tensor(index % CLASSES)
