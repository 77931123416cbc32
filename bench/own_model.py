"""Seconds per epoch of the seeds' FashionMNIST NeuralNetwork trained through torchkeep.fit, against the
seed-style loop and the compute floor, interleaved round by round (same model init, same optimizer).

  floor               AdamW + OneCycleLR (as fit builds them), a bare zero_grad/forward/loss/backward/step
                      loop over a list of batches sliced before timing
  seed-style loop     the same loop fed by DataLoader(TensorDataset(images, labels), shuffle=True)
  torchkeep.fit (tensors)     torchkeep.fit(model, (images, labels), run_dir=..., epochs=1): BatchLoader,
                      run directory, JSONL, an async checkpoint at the epoch end, the bundle; wall clock
  torchkeep.fit (DataLoader)  the seed's DataLoader handed to torchkeep.fit (rebuilt as a DatasetLoader)

FashionMNIST-shaped tensors (N, 1, 28, 28) are generated (nothing downloads). No validation.
Run: .venv/bin/python bench/own_model.py [--rows 6000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
from _common import environment, median, table  # noqa: E402

import torchkeep  # noqa: E402
from torchkeep.training.optim import OptimConfig, build_optimizer, build_scheduler  # noqa: E402

BATCH = 64


class NeuralNetwork(nn.Module):  # the seeds' model
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear_relu_stack = nn.Sequential(nn.Linear(28 * 28, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                               nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))


def model() -> NeuralNetwork:
    torch.manual_seed(0)
    return NeuralNetwork()


def bare_loop(batches) -> float:
    net = model()
    config = OptimConfig(lr=1e-3)
    optimizer = build_optimizer(config, net.parameters())
    scheduler = build_scheduler(config, optimizer, len(batches))
    start = time.perf_counter()
    for images, labels in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


def through_fit(data, root: str) -> tuple[float, float]:
    run_dir = tempfile.mkdtemp(dir=root)
    shutil.rmtree(run_dir)
    start = time.perf_counter()
    result = torchkeep.fit(model(), data, run_dir=run_dir, epochs=1, batch_size=BATCH, lr=1e-3, quiet=True)
    return time.perf_counter() - start, result.state.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=6_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("torchkeep").setLevel(logging.ERROR)  # the model lives in this script: no load warning
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(args.rows, 1, 28, 28, generator=generator)
    labels = (images.flatten(1) @ torch.randn(784, 10, generator=generator)).argmax(dim=1)
    order = torch.randperm(args.rows, generator=generator)
    batches = [(images[order[i : i + BATCH]], labels[order[i : i + BATCH]]) for i in range(0, args.rows, BATCH)]

    def seed_loader() -> DataLoader:
        return DataLoader(TensorDataset(images, labels), batch_size=BATCH, shuffle=True)

    times: dict[str, list[float]] = {name: [] for name in ("floor", "seed", "fit", "fit_inner", "fit_dl", "fit_dl_inner")}
    with tempfile.TemporaryDirectory(prefix="torchkeep-bench-own-") as root:
        for _ in range(args.rounds):
            times["floor"].append(bare_loop(batches))
            times["seed"].append(bare_loop(seed_loader()))
            wall, inner = through_fit((images, labels), root)
            times["fit"].append(wall)
            times["fit_inner"].append(inner)
            wall, inner = through_fit(seed_loader(), root)
            times["fit_dl"].append(wall)
            times["fit_dl_inner"].append(inner)
    floor = median(times["floor"])
    rows = [
        ("compute floor (pre-sliced batches, bare loop)", "floor"),
        ("seed-style loop over DataLoader(TensorDataset)", "seed"),
        ("torchkeep.fit on tensors (wall clock of the call)", "fit"),
        ("  same, fit's own train_seconds", "fit_inner"),
        ("torchkeep.fit on the seed's DataLoader (wall clock)", "fit_dl"),
        ("  same, fit's own train_seconds", "fit_dl_inner"),
    ]
    print(f"NeuralNetwork (669,706 parameters), {args.rows:,} rows of 1x28x28, batch {BATCH}, one epoch,"
          f" median of {args.rounds} interleaved rounds")
    print(table(["variant", "s / epoch", "rows/s", "vs floor"],
                [(label, f"{median(times[key]):.2f}", f"{args.rows / median(times[key]):,.0f}",
                  f"{median(times[key]) / floor:.2f}x") for label, key in rows]))
    print(environment())


if __name__ == "__main__":
    main()
