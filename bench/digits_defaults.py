"""How the digits defaults were chosen: candidate settings scored on validation splits of the TRAINING
part only (scikit-learn's train_test_split(test_size=0.2, random_state=0)); the test part is never read.

    PYTHONPATH=src python bench/digits_defaults.py [--seeds 3]

Each candidate trains with torchkeep's own validation split (10% of the training part, seeds 0..S-1)
and the table prints the mean validation accuracy and log loss over those seeds, and seconds per run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

import torchkeep
from torchkeep.data.image_io import RawImages

CANDIDATES = {
    "cnn 32,64 (default)": {},
    "cnn 32,64 pad 1": {"augment_pad": 1},
    "cnn 32,64 15 epochs": {"epochs": 15},
    "cnn 32,64 60 epochs": {"epochs": 60},
    "cnn 32,64 lr 1e-2": {"lr": 1e-2},
    "cnn 64,128": {"widths": [64, 128]},
    "cnn 32,64 upscaled 16x16": {"image_size": [16, 16]},
    "mlp 512,512": {"architecture": "mlp"},
    "cnn 32,64 pad 1 60 epochs": {"augment_pad": 1, "epochs": 60},
    "cnn 64,128 pad 1": {"widths": [64, 128], "augment_pad": 1},
    "cnn 32,64 pad 1 lr 1e-2": {"augment_pad": 1, "lr": 1e-2},
    "cnn 32,64 pool flatten": {"pool": "flatten"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = parser.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)[:, None]
    train_index, _ = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0)
    raw = RawImages(images=images[train_index], labels=digits.target[train_index].tolist(),
                    files=[str(i) for i in train_index], skipped=[])
    torch.set_num_threads(1)  # one thread: on a shared 2-core machine two threads stalled each other
    print(f"{'candidate':<28} {'valid acc':>9} {'log loss':>9} {'s/run':>6}")
    for name, settings in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        accuracy, log_loss, seconds = [], [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as run_dir:
                started = time.perf_counter()
                result = torchkeep.train(raw, run_dir=run_dir, seed=seed, threads=1, quiet=True, **settings)
                seconds.append(time.perf_counter() - started)
            accuracy.append(result.valid["accuracy"])
            log_loss.append(result.valid["log_loss"])
        print(f"{name:<28} {np.mean(accuracy):9.4f} {np.mean(log_loss):9.4f} {np.median(seconds):6.1f}", flush=True)


if __name__ == "__main__":
    main()
