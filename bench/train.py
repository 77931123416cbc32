"""Seconds per training epoch on the full nycflights13 training split, batch 1024: the loop fit()
(torchkeep.training.loop.fit)
against the compute floor, interleaved round by round.

  floor            the default model (same init seed), AdamW + OneCycleLR as fit() builds them, stepped
                   in a bare zero_grad/forward/loss/backward/step/sched.step loop over a list of batch
                   dicts prepared before timing (same batch order as fit's epoch 0)
  fit()            train.loop.fit(model, BCEWithLogitsLoss, BatchLoader, TrainConfig(epochs=1)), no
                   validation loader, no checkpointer; wall clock of the call
  bare + BatchLoader   the floor's loop fed by torchkeep.BatchLoader (splits loader from fit overhead)
  bare + per-row   the floor's loop fed by a seed-style per-row polars DataLoader (num_workers=0), timed
                   over a bounded number of batches and scaled to a full epoch (an estimate)

With --track it measures tracking overhead instead: the same fit() epoch with no trackers vs with
every tracker (metrics.jsonl + TensorBoard + W&B in offline mode), interleaved round by round; the
epoch is fit's own state.train_seconds, tracker start (wandb.init) and close are timed apart.

Run: .venv/bin/python bench/train.py [--rounds 7] [--row-batches 30]
     .venv/bin/python bench/train.py --track [--log-every-steps 50]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from torchkeep.training import loop  # noqa: E402

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

    def fit(self, log_every_steps: int = 50, trackers: Sequence[Any] = ()) -> tuple[float, float, nn.Module]:
        model, loader = self.model(), self.loader()
        config = torchkeep.TrainConfig(epochs=1, batch_size=BATCH, seed=0, log_every_steps=log_every_steps)
        start = time.perf_counter()
        result = loop.fit(model, self.loss_fn, loader, config=config, trackers=trackers)
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


ALL_TRACKERS = ["jsonl", "tensorboard", "wandb"]


def child_cpu_seconds() -> float:
    """CPU time of this process's live children (wandb's wandb-core service): work the trackers cause
    outside the training process, which the epoch's wall clock only shows when cores are short."""
    import glob
    import os

    total = 0.0
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(path).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tracked_fit(bench: Bench, log_every_steps: int, root: Path, round_: int) -> tuple[float, float, float]:
    """(epoch seconds, tracker start + close seconds, child CPU seconds during the epoch) of one
    fit() epoch with every tracker on."""
    from torchkeep.track import build_trackers, close_trackers

    start = time.perf_counter()
    config = {"train": {"epochs": 1, "batch_size": BATCH, "log_every_steps": log_every_steps}}
    trackers = build_trackers(ALL_TRACKERS, str(root / f"round-{round_}"), config)
    setup = time.perf_counter() - start
    cpu = child_cpu_seconds()
    _, epoch, _ = bench.fit(log_every_steps, trackers)
    cpu = child_cpu_seconds() - cpu
    start = time.perf_counter()
    close_trackers(trackers)
    failed = [t.name for t in trackers if t.failed]
    assert not failed, f"trackers failed: {failed}"
    return epoch, setup + time.perf_counter() - start, cpu


def cost_per_event(root: Path, events: int = 500) -> dict[str, float]:
    """Microseconds one train event costs each tracker's log() in the training thread (load-insensitive)."""
    from torchkeep.track import build_trackers, close_trackers

    trackers = build_trackers(ALL_TRACKERS, str(root / "per-event"), {"train": {"epochs": 1}})
    event = {"split": "train", "epoch": 0, "loss": 0.41, "lr": 0.01, "rows_per_s": 120_000.0}
    costs = {}
    for tracker in trackers:
        for step in range(10):  # warm-up
            tracker.log(event, step)
        start = time.perf_counter()
        for step in range(10, 10 + events):
            tracker.log(event, step)
        costs[tracker.name] = (time.perf_counter() - start) / events * 1e6
    close_trackers(trackers)
    return costs


def tracking_overhead(bench: Bench, rounds: int, log_every_steps: int) -> None:
    import os
    import tempfile

    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    events = len(bench.batches) // log_every_steps
    print(f"tracking overhead: fit() epochs with no trackers vs jsonl + tensorboard + wandb"
          f" (WANDB_MODE={os.environ['WANDB_MODE']}), a train event every {log_every_steps} steps"
          f" ({events} per epoch, 4 scalars each)\n")
    with tempfile.TemporaryDirectory(prefix="torchkeep-bench-track-") as root:
        bench.fit(log_every_steps)  # warm-up, not timed
        tracked_fit(bench, log_every_steps, Path(root), -1)
        off: list[float] = []
        on: list[float] = []
        overhead: list[float] = []
        child_cpu: list[float] = []
        rows = []
        for round_ in range(rounds):
            if round_ % 2 == 0:  # alternate which goes first
                off.append(bench.fit(log_every_steps)[1])
                epoch, setup, cpu = tracked_fit(bench, log_every_steps, Path(root), round_)
            else:
                epoch, setup, cpu = tracked_fit(bench, log_every_steps, Path(root), round_)
                off.append(bench.fit(log_every_steps)[1])
            on.append(epoch)
            overhead.append(setup)
            child_cpu.append(cpu)
            rows.append((f"round {round_ + 1}", f"{off[-1]:.3f}", f"{on[-1]:.3f}", f"{on[-1] / off[-1]:.3f}x",
                         f"{setup:.2f}", f"{cpu:.3f}"))
        print(table(["", "no trackers s/epoch", "all trackers s/epoch", "on/off", "tracker start+close s",
                     "wandb-core CPU s"], rows))
        costs = cost_per_event(Path(root))
    ratio = median(on) / median(off)
    per_round = median([a / b for a, b in zip(on, off)])
    print(f"\nmedians of {rounds} interleaved rounds: no trackers {median(off):.3f} s/epoch, all trackers"
          f" {median(on):.3f} s/epoch, tracker start + close {median(overhead):.2f} s per run (not per epoch)")
    print(f"all trackers / none, ratio of medians:      {ratio:.3f}x   target <= 1.03x  {verdict(ratio <= 1.03)}")
    print(f"all trackers / none, median per-round ratio: {per_round:.3f}x   target <= 1.03x  "
          f"{verdict(per_round <= 1.03)}")
    print(f"all trackers / none, ratio of best times:   {min(on) / min(off):.3f}x   (least disturbed by background"
          " load)")
    per_epoch = sum(costs.values()) * events / 1e6
    print("\nlog() cost per train event in the training thread: "
          + ", ".join(f"{name} {us:.0f} us" for name, us in costs.items())
          + f"; x {events} events = {per_epoch * 1e3:.2f} ms per epoch = {per_epoch / median(off):.2%} of the"
          f" no-tracker epoch; wandb-core (another process) used {median(child_cpu):.3f} CPU s per epoch")
    estimate = 1 + (per_epoch + median(child_cpu)) / median(off)
    print(f"estimate from costs: {estimate:.4f}x   target <= 1.03x  {verdict(estimate <= 1.03)}   (counting"
          " wandb-core's CPU as if it all came out of the training thread)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--row-batches", type=int, default=30, help="batches timed per per-row run (0: skip)")
    parser.add_argument("--track", action="store_true",
                        help="measure tracking overhead instead: fit() with no trackers vs jsonl + tensorboard + wandb")
    parser.add_argument("--log-every-steps", type=int, default=50, help="with --track: fit's log_every_steps")
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
    if args.track:
        tracking_overhead(bench, args.rounds, args.log_every_steps)
        return

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
        ("train.loop.fit() + BatchLoader (wall clock of fit)", f"{median(times['fit']):.3f}",
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
