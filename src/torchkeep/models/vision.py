"""Image models: the seeds' MLP (Flatten + Linear stack) and a small CNN (conv-BN-ReLU blocks).

Both take `image`, uint8 (or float pixel values 0-255) [N, C, H, W], and normalize it themselves
with the training split's per-channel mean/std, held as buffers saved with the weights: an export
or a server needs nothing but decode + resize in front of the model. Parameter names are stable
for transfer learning: `features.*` is the backbone, `head.*` the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from torchkeep.errors import ConfigError

ARCHITECTURES = ("cnn", "mlp")
POOLS = ("avg", "flatten")
DEFAULT_WIDTHS = [32, 64]
SMALLEST_MAP = 4  # the default cnn halves H, W until the shorter side is at most this
MAX_WIDTH = 256


@dataclass(kw_only=True)
class VisionModelConfig:
    architecture: str = "cnn"  # "cnn" | "mlp" (the seeds' Flatten -> Linear -> ReLU stack)
    # cnn: channels per block (each block halves H, W). Left at the default, image runs take
    # default_widths(height, width) of their images instead: more blocks for larger images.
    widths: list[int] = field(default_factory=lambda: list(DEFAULT_WIDTHS))
    convs_per_block: int = 2
    # cnn: what the head sees. "avg": global average pooling, one value per channel (any input size);
    # "flatten": the last feature map whole, channels x H x W, where each thing is in the image. On
    # digits a frozen backbone keeps far more for new classes this way (bench/transfer.py probes).
    pool: str = "avg"
    hidden_sizes: list[int] = field(default_factory=lambda: [512, 512])  # mlp: hidden layer widths
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"vision.architecture must be cnn or mlp (got {self.architecture!r})")
        for name in ("widths", "hidden_sizes"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise ConfigError(f"vision.{name} must be positive integers (got {values})")
        if self.pool not in POOLS:
            raise ConfigError(f"vision.pool must be avg (global average pooling) or flatten (the whole last feature"
                              f" map) (got {self.pool!r})")
        if not isinstance(self.convs_per_block, int) or self.convs_per_block < 1:
            raise ConfigError(f"vision.convs_per_block must be >= 1 (got {self.convs_per_block})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"vision.dropout must be in [0, 1) (got {self.dropout})")


class Normalize(nn.Module):
    """uint8 / 0-255 pixels -> (x / 255 - mean) / std, per channel."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image.float() / 255.0 - self.mean) / self.std


class ImageMLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] * len(hidden_sizes) -> Linear: the seeds' NeuralNetwork."""

    def __init__(self, *, channels: int, height: int, width: int, out_features: int, mean: list[float],
                 std: list[float], hidden_sizes: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = [nn.Flatten()]
        size = channels * height * width
        for hidden in hidden_sizes:
            layers += [nn.Linear(size, hidden), nn.ReLU(), nn.Dropout(dropout)]
            size = hidden
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(size, out_features)
        self.single_output = out_features == 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.head(self.features(self.normalize(image)))
        return output.squeeze(1) if self.single_output else output


class SmallCNN(nn.Module):
    """[Conv3x3 -> BN -> ReLU] * convs_per_block -> MaxPool2d(2) per width (a block whose input is
    already 1 pixel high or wide skips its pooling), then global average pooling (`pool="avg"`) or the
    last feature map flattened (`pool="flatten"`), dropout, Linear."""

    def __init__(self, *, channels: int, height: int, width: int, out_features: int, mean: list[float],
                 std: list[float], widths: list[int], convs_per_block: int = 2, dropout: float = 0.0,
                 pool: str = "avg") -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        layers: list[nn.Module] = []
        size = channels
        for block_width in widths:
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(size, block_width, 3, padding=1, bias=False), nn.BatchNorm2d(block_width),
                           nn.ReLU(inplace=True)]
                size = block_width
            if min(height, width) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
        if pool == "flatten":
            layers.append(nn.Flatten())
            size *= height * width
        else:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(size, out_features)
        self.single_output = out_features == 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        output = self.head(self.dropout(self.features(self.normalize(image))))
        return output.squeeze(1) if self.single_output else output


def default_widths(height: int, width: int) -> list[int]:
    """The cnn's blocks for images of this size: one block per halving of the shorter side until it is at
    most SMALLEST_MAP pixels (at least 2 blocks), widths doubling from 32 up to MAX_WIDTH. So the last
    feature map is a few pixels whatever the size and each of its cells sees most of the image (with two
    blocks a 28x28 image ends as 7x7 cells that each see 16x16 pixels, and average pooling mixes them).
    8x8 and 16x16: 32,64 (as before the rule); 28x28 and 32x32: 32,64,128; 64x64: 32,64,128,256."""
    side, blocks = min(height, width), 0
    while side > SMALLEST_MAP:
        side, blocks = side // 2, blocks + 1
    return [min(MAX_WIDTH, DEFAULT_WIDTHS[0] * 2**block) for block in range(max(len(DEFAULT_WIDTHS), blocks))]


def vision_model_args(config: VisionModelConfig, schema: object) -> dict[str, object]:
    """Constructor arguments as plain JSON values (saved in model.json and the bundle)."""
    target = schema.target  # type: ignore[attr-defined]
    common = {"channels": schema.channels, "height": schema.height, "width": schema.width,  # type: ignore[attr-defined]
              "out_features": target.output_size, "mean": list(schema.mean), "std": list(schema.std),  # type: ignore[attr-defined]
              "dropout": config.dropout}
    if config.architecture == "mlp":
        return {**common, "hidden_sizes": list(config.hidden_sizes)}
    cnn = {**common, "widths": list(config.widths), "convs_per_block": config.convs_per_block}
    return {**cnn, "pool": config.pool} if config.pool != "avg" else cnn  # bundles with "avg" keep their earlier args
