"""`python train_own.py RUN_DIR`: trains own_models.SmallImageNet with torchkeep.fit on generated
tensors. The same command starts the run and, after a kill, continues it (resume=True)."""

from __future__ import annotations

import sys

import torch
from own_models import SmallImageNet, blobs

import torchkeep

if __name__ == "__main__":
    torch.manual_seed(0)  # the initial weights: the same in every process
    images, labels = blobs(4_000, seed=0)
    valid_images, valid_labels = blobs(500, seed=1)
    torchkeep.fit(SmallImageNet(), (images, labels), (valid_images, valid_labels), run_dir=sys.argv[1], resume=True,
                  epochs=2, batch_size=32, every_steps=5, deterministic=True, seed=1, threads=1)
