"""A user's script, started by torchrun: `torchkeep.fit` on their own model, once per process.

Also evaluates the final model on a validation set split between the ranks (each rank a share of the
batches, outputs gathered) and on the whole set in each rank; rank 0 writes both to the JSON file named
on the command line.
"""

from __future__ import annotations

import json
import sys

import torch
from torch import nn

import torchkeep
from torchkeep import distributed
from torchkeep.data.loader import BatchLoader
from torchkeep.training.evaluate import evaluate
from torchkeep.training.metrics import metrics_for_task


# Per process: 2 processes x 25 rows read what one process reads with batch_size 50.
SETTINGS = {"epochs": 3, "batch_size": 25, "lr": 1e-2, "grad_accum_steps": 2, "clip_grad_norm": 0.5,
            "restore_best": False}


def data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=generator)
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).float()
    return (x[:300], y[:300]), (x[300:], y[300:])


def new_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1), nn.Flatten(0))


def main(out: str, run_dir: str, strategy: str) -> None:
    model = new_model()
    (_, _), (x_valid, y_valid) = data()
    x, y = torch.cat([data()[0][0], x_valid]), torch.cat([data()[0][1], y_valid])
    run = torchkeep.fit(model, *data(), loss="bce", run_dir=run_dir, strategy=strategy, quiet=True, device="cpu",
                        **SETTINGS)

    env = distributed.current()
    valid = BatchLoader({"input": x[297:], "target": y[297:]}, 10, shuffle=False)  # 103 rows: 11 uneven batches
    batches = [(batch["input"], batch["target"]) for batch in valid]
    loss = nn.functional.binary_cross_entropy_with_logits
    metrics = metrics_for_task("binary")
    shared = evaluate(model, loss, batches, metrics, "cpu", share=(env.rank, env.world_size))
    whole = evaluate(model, loss, batches, metrics, "cpu")
    weights = {k: v.flatten().tolist() for k, v in model.state_dict().items()}
    with open(f"{out}.rank{env.rank}", "w") as file:
        json.dump({"shared": shared, "whole": whole, "weights": weights, "valid": run.valid,
                   "world_size": env.world_size, "bundle": run.bundle}, file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
