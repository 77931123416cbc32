"""Images for predict / evaluate: a folder, CSV, idx folder or uint8 [N, C, H, W] pixels, at the schema's size."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from torchkeep.data.image_io import RawImages, read_images
from torchkeep.data.images import ImageSchema


def read_for_predict(schema: ImageSchema, data: Any, *, with_labels: bool, image_dir: str | None = None) -> RawImages:
    """Images for predict / evaluate (a folder, CSV, idx folder or uint8 [N, C, H, W] array), decoded to the
    schema's size and channels."""
    if isinstance(data, RawImages):
        return data
    if isinstance(data, (np.ndarray, torch.Tensor)):
        images = data.numpy() if isinstance(data, torch.Tensor) else data
        return RawImages(images=np.asarray(images, dtype=np.uint8), labels=None, files=[], skipped=[])
    return read_images(data, image_dir=image_dir, size=schema.size, channels=schema.channels, need_labels=with_labels)
