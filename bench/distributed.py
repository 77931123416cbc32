"""1 process vs 2 processes (DDP over gloo, CPU) on the built-in flights table: the same global batch, so
the same model within float tolerance, and the throughput of each.

    .venv/bin/python bench/distributed.py [--rows 20000] [--epochs 2] [--batch-size 256] [--strategy ddp]
                                          [--optimizer adamw]

The 1-process run trains with --batch-size 2B on 2 torch threads; the 2-process run (`torchkeep train
--nproc 2`) with --batch-size B per process on 1 thread each, so both use the machine's 2 cores and read
the same samples per optimizer step. BatchNorm is off in both ([model] batch_norm = "none"): its
statistics are per process. Printed side by side: the max abs weight difference between the two bundles,
the validation metrics of each, training rows/s (epochs x training rows / the session's seconds in
run.json, which include validation, checkpoints and the bundle) and the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from safetensors.torch import load_file

from torchkeep.data.builtin import get_example


def train(cwd: Path, name: str, args: argparse.Namespace, *, nproc: int) -> tuple[dict, float]:
    batch = args.batch_size * (2 if nproc == 1 else 1)
    threads = 2 if nproc == 1 else 1
    command = [sys.executable, "-m", "torchkeep", "train", "config.toml", "--data", "flights.parquet", "--target",
               "late", "--epochs", str(args.epochs), "--batch-size", str(batch), "--threads", str(threads),
               "--seed", "0", "--run-dir", name, "--quiet", "--nproc", str(nproc), "--strategy", args.strategy,
               "--optimizer", args.optimizer]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads((cwd / name / "run.json").read_text()), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the built-in flights table (default 20000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="per process of the 2 (1 process: twice it)")
    parser.add_argument("--strategy", choices=["ddp", "fsdp"], default="ddp")
    parser.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw",
                        help="adamw (the default) moves weights whose gradient is ~0 by about lr per step in"
                        " either direction, so float rounding shows in the weights; sgd shows the rest")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        pl.read_parquet(get_example("flights").path).head(args.rows).write_parquet(cwd / "flights.parquet")
        (cwd / "config.toml").write_text('[model]\nbatch_norm = "none"\n')
        one, one_wall = train(cwd, "one", args, nproc=1)
        two, two_wall = train(cwd, "two", args, nproc=2)
        a, b = load_file(cwd / "one" / "bundle" / "model.safetensors"), load_file(cwd / "two" / "bundle" / "model.safetensors")
        difference = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
        train_rows = pl.read_parquet(cwd / "flights.parquet").height * 0.9 * args.epochs

    rate = {name: train_rows / run["seconds"] for name, run in (("one", one), ("two", two))}
    print(f"flights, {args.rows:,} rows, {args.epochs} epochs, global batch {2 * args.batch_size}, {args.strategy},"
          f" {args.optimizer}")
    print(f"{'':28}{'1 process x 2 threads':>24}{'2 processes x 1 thread':>24}")
    for metric in one["valid"]:
        print(f"{'valid ' + metric:28}{one['valid'][metric]:>24.6f}{two['valid'][metric]:>24.6f}")
    print(f"{'training rows/s':28}{rate['one']:>24,.0f}{rate['two']:>24,.0f}")
    print(f"{'session seconds (run.json)':28}{one['seconds']:>24.2f}{two['seconds']:>24.2f}")
    print(f"{'command wall seconds':28}{one_wall:>24.2f}{two_wall:>24.2f}")
    print(f"throughput ratio (2 processes / 1): {rate['two'] / rate['one']:.2f}x")
    print(f"max abs weight difference, 2 processes vs 1: {difference:.3g}")


if __name__ == "__main__":
    main()
