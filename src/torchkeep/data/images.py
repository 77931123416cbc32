"""ImageSchema: how images become model tensors, fitted on the training split; batch augmentation.

The schema fixes the size and channels every image is decoded to, fits per-channel mean/std on the
training images and encodes labels through the same TargetSpec as tables. `transform` gives
uint8 `image` [N, C, H, W]: normalization is not done here but inside the model (as buffers
saved with its weights), so the model, its exports and the server all take plain pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.data.image_io import RawImages, decode_image
from torchkeep.data.loader import BatchLoader
from torchkeep.data.table import TableSchema, TargetSpec, fit_target
from torchkeep.errors import DataError
from torchkeep.storage import open_storage

LABEL = "label"
STATS_SAMPLE = 20_000  # images used for mean/std: plenty for 3 numbers, bounded for big sets


@dataclass
class ImageSchema:
    height: int
    width: int
    channels: int
    mean: list[float]  # per channel, pixel values scaled to [0, 1]
    std: list[float]
    target: TargetSpec | None
    kind: str = field(default="image", init=False)

    @classmethod
    def fit(cls, raw: RawImages, *, task: str | None = None, source: str = "training data") -> ImageSchema:
        if raw.labels is None:
            raise DataError(f"{source}: no labels; training needs a label per image")
        if len(raw.labels) == 0:
            raise DataError(f"{source}: the training split is empty")
        labels = pl.DataFrame({LABEL: raw.labels})
        target = fit_target(labels, LABEL, task, False, source)
        if target.task == "regression" and task is None:
            target = fit_target(labels, LABEL, "multiclass", False, source)
        sample = torch.from_numpy(raw.images[:: max(1, len(raw.images) // STATS_SAMPLE)]).float() / 255
        mean = sample.mean(dim=(0, 2, 3))
        std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a constant channel must not divide by zero
        _, channels, height, width = raw.images.shape
        return cls(height=height, width=width, channels=channels, mean=mean.tolist(), std=std.tolist(), target=target)

    @property
    def size(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def labels_schema(self) -> TableSchema:
        """The labels as a table schema of no columns: label encoding and decoding are the table's, shared."""
        return TableSchema([], [], self.target)

    def encode_labels(self, labels: list[Any], source: str = "data") -> torch.Tensor:
        """Labels -> the `target` tensor the loss takes (class indices, or 0/1 for binary)."""
        return self.labels_schema.encode_target(pl.DataFrame({LABEL: labels}), source)

    def transform(self, raw: RawImages, *, with_target: bool = True, source: str = "data") -> dict[str, torch.Tensor]:
        """`image` uint8 [N, C, H, W] and (with_target) `target`, as TableSchema.transform gives it."""
        images = raw.images
        if tuple(images.shape[1:]) != (self.channels, self.height, self.width):
            raise DataError(f"{source}: images of shape {tuple(images.shape[1:])}, expected"
                            f" {(self.channels, self.height, self.width)} [C, H, W]")
        out = {"image": torch.from_numpy(np.ascontiguousarray(images))}
        if with_target:
            if raw.labels is None:
                raise DataError(f"{source}: no labels to evaluate against")
            out["target"] = self.encode_labels(raw.labels, source)
        return out

    def decode_bytes(self, data: bytes | bytearray, name: str) -> np.ndarray:
        """One encoded image as the model takes it: uint8 [C, H, W] at the schema's size."""
        return decode_image(data, size=self.size, channels=self.channels, name=name)

    def decode(self, outputs: torch.Tensor) -> pl.DataFrame:
        return self.labels_schema.decode(outputs)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "target"},
                "target": asdict(self.target) if self.target else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageSchema:
        fields = {k: data[k] for k in ("height", "width", "channels", "mean", "std")}
        return cls(**fields, target=TargetSpec(**data["target"]) if data.get("target") else None)

    def describe(self) -> dict[str, Any]:
        return {
            "input": {"image": {"format": "PNG, JPEG or any Pillow-readable image; EXIF orientation applied",
                                "resized_to": [self.height, self.width], "channels": self.channels,
                                "color": "gray" if self.channels == 1 else "RGB"}},
            "columns": [{"name": "image", "type": "image"}],
            "target": self.target.name if self.target else None,
            "task": self.target.task if self.target else None,
            "labels": self.target.labels if self.target and self.target.labels else None,
        }


def is_image_schema(data: dict[str, Any]) -> bool:
    return data.get("kind") == "image"


# -- augmentation -------------------------------------------------------------------------------


def augment(images: torch.Tensor, generator: torch.Generator, *, pad: int, flip: bool) -> torch.Tensor:
    """Random crop after zero padding by `pad`, and a random horizontal flip, for a whole batch at once."""
    batch, _, height, width = images.shape
    if pad > 0:
        padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator)
        rows = (dy[:, None] + torch.arange(height))[:, :, None]  # [B, H, 1]
        cols = (dx[:, None] + torch.arange(width))[:, None, :]  # [B, 1, W]
        # advanced indexing puts the broadcast [B, H, W] first and the channel slice last
        images = padded[torch.arange(batch)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()
    if flip:
        mask = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(mask[:, None, None, None], images.flip(-1), images)
    return images


class AugmentingLoader:
    """A BatchLoader whose training batches are augmented; each batch's randomness comes from
    (seed, epoch, batch position) alone, so a run resumed mid-epoch sees the very same batches."""

    def __init__(self, loader: BatchLoader | Any, *, pad: int, flip: bool) -> None:  # or a DatasetLoader
        self.loader, self.pad, self.flip = loader, pad, flip

    @property
    def epoch(self) -> int:
        return self.loader.epoch

    @property
    def position(self) -> int:
        return self.loader.position

    @property
    def num_rows(self) -> int:
        return self.loader.num_rows

    @property
    def world_size(self) -> int:
        return getattr(self.loader, "world_size", 1)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.loader:
            key = np.random.SeedSequence([self.loader.seed, self.loader.epoch, self.loader.position, 0xA06])
            generator = torch.Generator().manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> 1))
            yield {**batch, "image": augment(batch["image"], generator, pad=self.pad, flip=self.flip)}

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


# -- streaming (over the memory budget) ---------------------------------------------------------


class ImageFileDataset(torch.utils.data.Dataset):
    """One image decoded per item, for data sets over the memory budget (DatasetLoader + workers)."""

    def __init__(self, schema: ImageSchema, root: str, files: list[str], targets: torch.Tensor) -> None:
        self.schema, self.root, self.files, self.targets = schema, root, files, targets
        self._storage: Any = None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if self._storage is None:  # opened in the worker process, not pickled into it
            self._storage = open_storage(self.root)
        name = self.files[index]
        image = self.schema.decode_bytes(self._storage.read(name), f"{self.root.rstrip('/')}/{name}")
        # Pillow's pixels are a read-only array: a copy the batch may own (torch warns on read-only ones)
        return {"image": torch.from_numpy(image.copy()), "target": self.targets[index]}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None}
