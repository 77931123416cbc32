"""How the digits defaults were chosen: candidate settings scored on validation splits of the TRAINING
part only (scikit-learn's train_test_split(test_size=0.2, random_state=0)); the test part is never read.

    PYTHONPATH=src python bench/digits_defaults.py [--seeds 3] [--jpeg SIZE]

Each candidate trains with torchkeep's own validation split (10% of the training part, seeds 0..S-1)
and the table prints the mean validation accuracy and log loss over those seeds, and seconds per run.
With --jpeg SIZE the training part is first written as RGB JPEG files of SIZE x SIZE in class folders
(bench/images.py's re-encoded digits) and each candidate trains on that folder, as a user would.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import torchkeep
from torchkeep.data.image_io import RawImages

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import write_jpegs  # noqa: E402

CANDIDATES = {
    "defaults": {},  # with --jpeg 28: widths 32,64,128 and 11 epochs by the size rules
    "widths 32,64 30 epochs": {"widths": [32, 64], "epochs": 30},  # the defaults before the size rules
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
    # for --jpeg 28 (bench/README.md): the defaults before the size rules (2 blocks, 30 epochs) against
    # larger crops, fewer epochs, a third block, the flatten head
    "pad 2": {"augment_pad": 2, "widths": [32, 64], "epochs": 30},
    "pad 3": {"augment_pad": 3, "widths": [32, 64], "epochs": 30},
    "10 epochs": {"widths": [32, 64], "epochs": 10},
    "pad 3 10 epochs": {"augment_pad": 3, "widths": [32, 64], "epochs": 10},
    "widths 32,64,128 10 epochs": {"widths": [32, 64, 128], "epochs": 10},
    "pool flatten 10 epochs": {"widths": [32, 64], "pool": "flatten", "epochs": 10},
    "widths 32,64,128 30 epochs": {"widths": [32, 64, 128], "epochs": 30},
}


def cpu_seconds() -> float:
    """This process's CPU time: on a shared machine, less at the mercy of other jobs than wall time."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    parser.add_argument("--jpeg", type=int, metavar="SIZE", help="train on the training part re-encoded as RGB JPEGs")
    args = parser.parse_args()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)[:, None]
    train_index, _ = train_test_split(np.arange(len(images)), test_size=0.2, random_state=0)
    raw = RawImages(images=images[train_index], labels=digits.target[train_index].tolist(),
                    files=[str(i) for i in train_index], skipped=[])
    folder = tempfile.TemporaryDirectory()
    data = raw
    if args.jpeg:
        write_jpegs(Path(folder.name), images[:, 0], digits.target, train_index, args.jpeg)
        data = folder.name
    torch.set_num_threads(1)  # one thread: on a shared 2-core machine two threads stalled each other
    print(f"{'candidate':<28} {'valid acc':>9} {'log loss':>9} {'s/run':>6} {'cpu s':>6}  per seed")
    for name, settings in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        accuracy, log_loss, seconds, cpu = [], [], [], []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as run_dir:
                started, used = time.perf_counter(), cpu_seconds()
                result = torchkeep.train(data, run_dir=run_dir, seed=seed, threads=1, quiet=True, **settings)
                seconds.append(time.perf_counter() - started)
                cpu.append(cpu_seconds() - used)
            accuracy.append(result.valid["accuracy"])
            log_loss.append(result.valid["log_loss"])
        each = " ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(accuracy, log_loss))
        print(f"{name:<28} {np.mean(accuracy):9.4f} {np.mean(log_loss):9.4f} {np.median(seconds):6.1f}"
              f" {np.median(cpu):6.1f}  {each}", flush=True)


if __name__ == "__main__":
    main()
