"""Loading throughput on the full nycflights13 training split (80% of 327k rows), batch 1024, shuffled.

  per-row polars   seed style: Dataset whose __getitem__ does df.row(idx) -> tensors, DataLoader
                   num_workers=0 (timed over a bounded number of batches: it is slow)
  BatchLoader      torchkeep.BatchLoader on TableSchema.transform(train) tensors (full epochs)
  index_select     the practical limit: randperm + one torch.index_select per tensor for the whole
                   epoch, then batch slices (full epochs)

Every loader hands out the same dict of batch tensors (categorical, continuous, target); the loop
only reads each tensor's shape. Run: .venv/bin/python bench/loader.py [--epochs 15] [--row-batches 60] [--no-single-thread]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_features_argument, describe_data,
    TARGET, PerRowPolarsDataset, encoded_frame, environment, load_flights, median, split, table, verdict,
)

import torchkeep  # noqa: E402

BATCH = 1024


def consume(batches, limit: int | None = None) -> tuple[int, float]:
    """Rows handed out and seconds taken, touching only each batch tensor's shape."""
    rows = 0
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if limit is not None and i >= limit:
            break
        for t in batch.values():
            t.shape  # noqa: B018 - touch the batch
        rows += batch["target"].shape[0]
    return rows, time.perf_counter() - start


def whole_epoch_index_select(tensors: dict[str, torch.Tensor], batch_size: int):
    order = torch.randperm(next(iter(tensors.values())).shape[0])
    gathered = {name: torch.index_select(t, 0, order) for name, t in tensors.items()}
    n = order.shape[0]
    for start in range(0, n, batch_size):
        yield {name: t[start : start + batch_size] for name, t in gathered.items()}


def per_batch_index_select(tensors: dict[str, torch.Tensor], batch_size: int):
    order = torch.randperm(next(iter(tensors.values())).shape[0])
    for start in range(0, order.shape[0], batch_size):
        index = order[start : start + batch_size]
        yield {name: torch.index_select(t, 0, index) for name, t in tensors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15, help="timed epochs of each whole-batch loader")
    parser.add_argument("--row-batches", type=int, default=60, help="batches per timed run of the per-row loader")
    parser.add_argument("--row-repeats", type=int, default=5, help="timed runs of the per-row loader")
    parser.add_argument("--no-single-thread", dest="single_thread_too", action="store_false",
                        help="skip the informational rerun of the whole-batch loaders at torch.set_num_threads(1)")
    add_features_argument(parser)
    args = parser.parse_args()

    print(environment())
    train, _ = split(frame := load_flights(args.features))
    print(describe_data(frame))
    schema = torchkeep.TableSchema.fit(train, target=TARGET)
    tensors = schema.transform(train)
    n = train.height
    print(f"training rows {n:,}; categorical {tuple(tensors['categorical'].shape)} {tensors['categorical'].dtype},"
          f" continuous {tuple(tensors['continuous'].shape)} {tensors['continuous'].dtype}; batch {BATCH}\n")

    # Per-row seed-style loader: a bounded number of batches per run, a fresh shuffled iterator each run.
    dataset = PerRowPolarsDataset(encoded_frame(tensors), n_categorical=tensors["categorical"].shape[1])
    per_row = torch.utils.data.DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)
    consume(per_row, limit=3)  # warm-up
    per_row_rates = []
    for _ in range(args.row_repeats):
        rows, seconds = consume(per_row, limit=args.row_batches)
        per_row_rates.append(rows / seconds)

    # Whole-batch loaders: full epochs, interleaved so that background load hits all alike.
    default_threads = torch.get_num_threads()
    settings = [default_threads] + ([1] if args.single_thread_too and default_threads != 1 else [])
    results = {}
    for threads in settings:
        torch.set_num_threads(threads)
        results[threads] = whole_batch_rates(tensors, args.epochs)
    torch.set_num_threads(default_threads)

    row = median(per_row_rates)
    for threads in settings:
        rates = results[threads]
        ours, limit = median(rates["batch"]), median(rates["epoch_select"])
        note = " (default)" if threads == default_threads else " (informational)"
        print(f"torch threads: {threads}{note}")
        lines = [
            ("per-row polars Dataset, DataLoader num_workers=0", f"{row:,.0f}", spread(per_row_rates),
             f"{args.row_repeats} x {args.row_batches} batches", "1.0x", f"{row / limit:.3f}x"),
        ]
        for name, label in (("batch", "torchkeep.BatchLoader"), ("batch_select", "index_select per batch (reference)"),
                            ("epoch_select", "index_select whole epoch (practical limit)")):
            rate = median(rates[name])
            lines.append((label, f"{rate:,.0f}", spread(rates[name]), f"{args.epochs} epochs", f"{rate / row:,.1f}x",
                          f"{rate / limit:.2f}x"))
        print(table(["loader", "rows/s (median)", "range", "timed", "vs per-row", "vs limit"], lines))
        print()
        print(f"  BatchLoader / per-row polars:            {ours / row:8.1f}x   target >= 100x  {verdict(ours / row >= 100)}")
        print(f"  BatchLoader / whole-epoch index_select:  {ours / limit:8.2f}x   target >= 0.7x  {verdict(ours / limit >= 0.7)}")
        print()
    print("per-row loader timed at the default thread count only (it is Python-bound);"
          " the targets are judged at the default thread count.")


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def whole_batch_rates(tensors: dict[str, torch.Tensor], epochs: int) -> dict[str, list[float]]:
    n = tensors["target"].shape[0]
    loader = torchkeep.BatchLoader(tensors, BATCH, shuffle=True, seed=0)
    makers = {
        "batch": lambda: loader,
        "epoch_select": lambda: whole_epoch_index_select(tensors, BATCH),
        "batch_select": lambda: per_batch_index_select(tensors, BATCH),
    }
    for make in makers.values():  # warm-up
        consume(make())
    rates: dict[str, list[float]] = {name: [] for name in makers}
    for _ in range(epochs):
        for name, make in makers.items():
            rows, seconds = consume(make())
            assert rows == n, (name, rows, n)
            rates[name].append(rows / seconds)
    return rates


if __name__ == "__main__":
    main()
