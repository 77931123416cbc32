"""Seconds per training epoch on the full nycflights13 training split, batch 1024: torchkeep.fit()
against the compute floor, interleaved round by round.

  floor            the default model (same init seed), AdamW + OneCycleLR as fit() builds them, stepped
                   in a bare zero_grad/forward/loss/backward/step/sched.step loop over a list of batch
                   dicts prepared before timing (same batch order as fit's epoch 0)
  fit()            torchkeep.fit(model, BCEWithLogitsLoss, BatchLoader, TrainConfig(epochs=1)), no
                   validation loader, no checkpointer; wall clock of the call
  bare + BatchLoader   the floor's loop fed by torchkeep.BatchLoader (splits loader from fit overhead)
  bare + per-row   the floor's loop fed by a seed-style per-row polars DataLoader (num_workers=0), timed
                   over a bounded number of batches and scaled to a full epoch (an estimate)

Run: .venv/bin/python bench/train.py [--rounds 7] [--row-batches 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_features_argument, describe_data,
    TARGET, PerRowPolarsDataset, encoded_frame, environment, load_flights, median, split, table, verdict,
)

import torchkeep  # noqa: E402
from torchkeep.models import TabularModelConfig  # noqa: E402
from torchkeep.models.build import build_model, tabular_model_args  # noqa: E402

BATCH = 1024
INIT_SEED = 0


class Bench:
    def __init__(self, tensors: dict[str, torch.Tensor], model_args: dict) -> None:
        self.tensors, self.model_args = tensors, model_args
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.optim = torchkeep.OptimConfig()  # what fit() builds by default
        # Pre-batched epoch for the floor: exactly the batches of fit's epoch 0, as separate tensors.
        self.batches = [{k: v.clone() for k, v in b.items()} for b in self.loader()]

    def loader(self) -> torchkeep.BatchLoader:
        return torchkeep.BatchLoader(self.tensors, BATCH, shuffle=True, seed=0)

    def model(self) -> nn.Module:
        torch.manual_seed(INIT_SEED)
        return build_model("entity_embedding_mlp", self.model_args)

    def bare_loop(self, batches, total_steps: int, limit: int | None = None) -> tuple[float, int, nn.Module]:
        model = self.model()
        start = time.perf_counter()
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.optim.lr, total_steps=total_steps, pct_start=self.optim.warmup_fraction
        )
        model.train()
        steps = 0
        for batch in batches:
            if limit is not None and steps >= limit:
                break
            optimizer.zero_grad(set_to_none=True)
            output = model(categorical=batch["categorical"], continuous=batch["continuous"])
            loss = self.loss_fn(output, batch["target"])
            loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
        return time.perf_counter() - start, steps, model

    def floor(self) -> tuple[float, nn.Module]:
        seconds, _, model = self.bare_loop(self.batches, len(self.batches))
        return seconds, model

    def fit(self) -> tuple[float, float, nn.Module]:
        model, loader = self.model(), self.loader()
        config = torchkeep.TrainConfig(epochs=1, batch_size=BATCH, seed=0)
        start = time.perf_counter()
        result = torchkeep.fit(model, self.loss_fn, loader, config=config)
        return time.perf_counter() - start, result.state.train_seconds, model

    def bare_batchloader(self) -> float:
        loader = self.loader()
        return self.bare_loop(loader, len(loader))[0]

    def bare_per_row(self, per_row: torch.utils.data.DataLoader, limit: int) -> float:
        """Seconds for `limit` batches scaled to a full epoch."""
        seconds, steps, _ = self.bare_loop(per_row, len(per_row), limit=limit)
        return seconds * len(per_row) / steps


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
               if x.is_floating_point())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--row-batches", type=int, default=30, help="batches timed per per-row run (0: skip)")
    add_features_argument(parser)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    print(environment())
    train, _ = split(frame := load_flights(args.features))
    print(describe_data(frame))
    schema = torchkeep.TableSchema.fit(train, target=TARGET)
    tensors = schema.transform(train)
    model_args = tabular_model_args(TabularModelConfig(), schema)
    bench = Bench(tensors, model_args)
    params = sum(p.numel() for p in bench.model().parameters())
    per_row = torch.utils.data.DataLoader(
        PerRowPolarsDataset(encoded_frame(tensors), tensors["categorical"].shape[1]), batch_size=BATCH, shuffle=True
    )
    print(f"training rows {train.height:,}, {len(bench.batches)} batches of {BATCH}; model {params:,} parameters,"
          f" embedding dims {model_args['embedding_dims']}, hidden {model_args['hidden_sizes']};"
          f" AdamW lr {bench.optim.lr} wd {bench.optim.weight_decay}, one-cycle\n")

    # Warm-up (not timed), and a check that fit() does the same computation as the floor.
    _, floor_model = bench.floor()
    _, _, fit_model = bench.fit()
    same = max_param_diff(floor_model, fit_model)
    bench.bare_batchloader()
    if args.row_batches:
        bench.bare_per_row(per_row, 3)

    times: dict[str, list[float]] = {"floor": [], "fit": [], "fit_inner": [], "bare_batch": [], "per_row": []}
    rows = []
    for round_ in range(args.rounds):
        # floor and fit() swap order every round, so neither always runs first after the others.
        if round_ % 2 == 0:
            times["floor"].append(bench.floor()[0])
            fit_wall, fit_inner, _ = bench.fit()
        else:
            fit_wall, fit_inner, _ = bench.fit()
            times["floor"].append(bench.floor()[0])
        times["fit"].append(fit_wall)
        times["fit_inner"].append(fit_inner)
        times["bare_batch"].append(bench.bare_batchloader())
        if args.row_batches:
            times["per_row"].append(bench.bare_per_row(per_row, args.row_batches))
        rows.append((f"round {round_ + 1}", f"{times['floor'][-1]:.3f}", f"{fit_wall:.3f}", f"{fit_inner:.3f}",
                     f"{times['bare_batch'][-1]:.3f}", f"{times['per_row'][-1]:.2f}" if args.row_batches else "-",
                     f"{fit_wall / times['floor'][-1]:.3f}x"))
    print(table(["", "floor s", "fit() s", "fit train_seconds", "bare+BatchLoader s", "bare+per-row s (est.)",
                 "fit/floor"], rows))
    print()

    floor = median(times["floor"])
    summary = [
        ("compute floor (pre-batched tensors, bare loop)", f"{floor:.3f}", f"{len(bench.batches) * BATCH / floor:,.0f}", "1.000x"),
        ("torchkeep.fit() + BatchLoader (wall clock of fit)", f"{median(times['fit']):.3f}",
         f"{train.height / median(times['fit']):,.0f}", f"{median(times['fit']) / floor:.3f}x"),
        ("  same, fit's own state.train_seconds", f"{median(times['fit_inner']):.3f}",
         f"{train.height / median(times['fit_inner']):,.0f}", f"{median(times['fit_inner']) / floor:.3f}x"),
        ("bare loop + torchkeep.BatchLoader", f"{median(times['bare_batch']):.3f}",
         f"{train.height / median(times['bare_batch']):,.0f}", f"{median(times['bare_batch']) / floor:.3f}x"),
    ]
    if args.row_batches:
        summary.append((f"bare loop + per-row polars DataLoader (est. from {args.row_batches} batches)",
                        f"{median(times['per_row']):.2f}", f"{train.height / median(times['per_row']):,.0f}",
                        f"{median(times['per_row']) / floor:.2f}x"))
    print(f"medians of {args.rounds} interleaved rounds, seconds per epoch:")
    print(table(["", "s/epoch", "rows/s", "vs floor"], summary))
    print()
    ratio = median(times["fit"]) / floor
    per_round = [f / c for f, c in zip(times["fit"], times["floor"])]
    best = min(times["fit"]) / min(times["floor"])
    print(f"fit() / floor, ratio of medians:      {ratio:.3f}x   target <= 1.05x  {verdict(ratio <= 1.05)}")
    print(f"fit() / floor, median per-round ratio: {median(per_round):.3f}x   target <= 1.05x  "
          f"{verdict(median(per_round) <= 1.05)}   (rounds: {', '.join(f'{r:.3f}' for r in per_round)})")
    print(f"fit() / floor, ratio of best times:   {best:.3f}x   (least disturbed by background load)")
    print(f"same computation check: max |parameter difference| fit() vs floor after one epoch = {same:.2e}")


if __name__ == "__main__":
    main()
