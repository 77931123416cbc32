"""Streamed parquet datasets: the streaming loader vs the in-memory BatchLoader vs a per-row IterableDataset,
and peak memory while training on a dataset 4x larger than --in-memory-gib.

A generated flights-like table (strings, a boolean, a low-cardinality integer, floats with nulls, a binary
target) of --rows rows is written as --files parquet files in hive folders (month=1..12). Each measurement runs
in its own process, and its peak RSS is read from /proc (VmHWM of the process, or VmRSS polled for a child
`torchkeep train`), so no measurement inherits another's memory. All loaders use the same fitted
TableSchema (fitted once, by the streamed one-pass fit) and batch 1024.

    loaders   rows/s over one shuffled epoch: BatchLoader on tensors already in memory (and the time to
              read + transform them), StreamLoader over the files (reads, decodes and shuffles as it goes),
              the same with its disk cache of decoded row groups (the first epoch, which writes it, and the
              second, which reads it: what `torchkeep train` does, RUN_DIR/stream-cache/),
              StreamLoader over the same files on s3:// (a moto server on 127.0.0.1), and a per-row
              torch IterableDataset (row groups transformed whole, then yielded row by row through a
              DataLoader's collate: the usual "streaming dataset"), timed over its first --per-row-rows rows.
    memory    `torchkeep train` with --in-memory-gib a quarter of the dataset's in-memory size (so it
              streams) for --train-steps optimizer steps, vs the same run read whole (--in-memory-gib 64).

    python bench/stream.py                      # 2M rows, 200 files (~1 min of generation + ~3 min)
    python bench/stream.py --rows 400000 --files 50 --skip-s3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

GiB = 1 << 30


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def generate(root: Path, rows: int, files: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_file = -(-rows // files)
    for number in range(files):
        n = min(per_file, rows - number * per_file)
        if n <= 0:
            break
        delay = rng.normal(10, 30, n)
        frame = pl.DataFrame({
            "carrier": rng.choice(["AA", "DL", "UA", "WN", "B6", "EV", "MQ", "US"], n),
            "origin": pl.Series([None if m else o for o, m in zip(rng.choice(["EWR", "JFK", "LGA"], n),
                                                                   rng.random(n) < 0.05)], dtype=pl.String),
            "weekend": rng.random(n) < 0.3,
            "hour": rng.integers(5, 23, n),
            "distance": rng.gamma(2.0, 400.0, n),
            "dep_delay": delay,
            "temperature": pl.Series(np.where(rng.random(n) < 0.1, np.nan, rng.normal(15, 8, n))).fill_nan(None),
            "late": delay + rng.normal(0, 10, n) > 15,
        })
        folder = root / f"month={number % 12 + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(folder / f"part-{number:04d}.parquet", row_group_size=max(1, n // 2))


# -- workers: one measurement each, in its own process ---------------------------------------------------


def worker(kind: str, data: str, schema_path: str, per_row_rows: int) -> dict:
    import torch

    from torchkeep.data.io import read_table
    from torchkeep.data.loader import BatchLoader
    from torchkeep.data.parquet import open_dataset
    from torchkeep.data.stream import StreamLoader
    from torchkeep.data.table import TableSchema

    torch.set_num_threads(1)
    schema = TableSchema.from_json(Path(schema_path).read_text())
    batch = 1024
    started = time.perf_counter()
    if kind == "memory":
        frame = read_table(data)
        tensors = schema.transform(frame, source=data)
        del frame
        prepared = time.perf_counter() - started
        loader = BatchLoader(tensors, batch, shuffle=True, seed=0)
        started = time.perf_counter()
        rows = sum(len(b["target"]) for b in loader)
        return {"rows": rows, "seconds": time.perf_counter() - started, "prepare_s": prepared, "peak": peak_rss_bytes()}
    dataset = open_dataset(data)
    fragments = dataset.fragments
    if kind in ("stream", "s3", "cached"):
        cache = tempfile.mkdtemp(prefix="torchkeep-bench-cache-") if kind == "cached" else None
        loader = StreamLoader(dataset, fragments, [f.rows for f in fragments], schema, batch, shuffle=True, seed=0,
                              cache_dir=cache)
        opened = time.perf_counter() - started
        started = time.perf_counter()
        rows = sum(len(b["target"]) for b in loader)
        seconds = time.perf_counter() - started
        if cache is None:
            return {"rows": rows, "seconds": seconds, "prepare_s": opened, "peak": peak_rss_bytes()}
        first = {"first_rows": rows, "first_s": seconds, "cache_bytes": loader.cache.used}  # type: ignore[union-attr]
        started = time.perf_counter()
        rows = sum(len(b["target"]) for b in loader)  # the second epoch: every row group from the cache
        seconds = time.perf_counter() - started
        shutil.rmtree(cache)
        return {"rows": rows, "seconds": seconds, "prepare_s": opened, "peak": peak_rss_bytes(), **first}

    class PerRow(torch.utils.data.IterableDataset):
        def __iter__(self):
            for fragment in fragments:
                tensors = schema.transform(dataset.read_fragment(fragment, schema.feature_names + ["late"]))
                for i in range(len(tensors["target"])):
                    yield {name: value[i] for name, value in tensors.items()}

    rows = 0
    for item in torch.utils.data.DataLoader(PerRow(), batch_size=batch, num_workers=0):
        rows += len(item["target"])
        if rows >= per_row_rows:
            break
    return {"rows": rows, "seconds": time.perf_counter() - started, "prepare_s": 0.0, "peak": peak_rss_bytes()}


def run_worker(kind: str, data: str, schema_path: str, per_row_rows: int, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", kind, "--data", data, "--schema", schema_path,
                           "--per-row-rows", str(per_row_rows)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"{kind} worker failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def train_peak(data: str, run_dir: str, in_memory_gib: float, steps: int) -> tuple[int, float, str]:
    """Peak RSS (VmRSS polled from /proc every 20 ms) and seconds of `torchkeep train` stopped after `steps`."""
    code = ("import sys, torchkeep; torchkeep.train(sys.argv[1], target='late', run_dir=sys.argv[2], quiet=True,"
            " in_memory_bytes=int(float(sys.argv[3]) * 2**30), ensemble_size=1, epochs=1, batch_size=1024,"
            " stop_at_step=int(sys.argv[4]), threads=1)")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code, data, run_dir, str(in_memory_gib), str(steps)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        time.sleep(0.02)
    _, errors = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"torchkeep train failed:\n{errors}")
    return peak, time.perf_counter() - started, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dir", default="/tmp/torchkeep-bench-stream")
    parser.add_argument("--per-row-rows", type=int, default=100_000)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--data")
    parser.add_argument("--schema")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.schema, args.per_row_rows)))
        return

    from torchkeep.data.parquet import open_dataset
    from torchkeep.data.table import TableSchema
    from torchkeep.data.table_stream_fit import fit_streamed

    root = Path(args.dir)
    data = root / "flights"
    if not data.exists() or len(list(data.rglob("*.parquet"))) != args.files:
        started = time.perf_counter()
        generate(data, args.rows, args.files)
        print(f"generated {args.rows:,} rows in {args.files} files ({time.perf_counter() - started:.1f} s)")
    dataset = open_dataset(str(data))
    started = time.perf_counter()
    fit = fit_streamed(dataset, dataset.fragments, [], target="late", scaling="robust", numeric_encoding="ple")
    fit_s = time.perf_counter() - started
    schema = TableSchema(fit.categorical, fit.continuous, fit.target, [], fit.notes)
    schema_path = root / "schema.json"
    schema_path.write_text(schema.to_json())
    disk = sum(p.stat().st_size for p in data.rglob("*.parquet"))
    print(f"dataset: {dataset.rows:,} rows, {len(dataset.files)} files, {len(dataset.fragments)} row groups,"
          f" {disk / 2**20:.0f} MiB on disk, ~{dataset.memory_bytes / 2**20:.0f} MiB as a table in memory,"
          f" ~{dataset.run_bytes(16) / 2**20:.0f} MiB with its tensors (both from the footers);"
          f" one-pass schema fit {fit_s:.1f} s ({dataset.rows / fit_s:,.0f} rows/s)")

    results = {kind: run_worker(kind, str(data), str(schema_path), args.per_row_rows)
               for kind in ("memory", "stream", "cached", "per_row")}
    if not args.skip_s3:
        results["s3"] = s3_worker(data, schema_path, args.per_row_rows)
    memory_rate = results["memory"]["rows"] / results["memory"]["seconds"]
    print(f"\n{'loader (batch 1024, shuffled)':44} {'rows/s':>12} {'vs memory':>10} {'peak RSS':>10}  notes")
    cached = results["cached"]
    results["cached_first"] = {"rows": cached["first_rows"], "seconds": cached["first_s"], "peak": cached["peak"]}
    for kind, label in (("memory", "BatchLoader, tensors in memory"), ("stream", "StreamLoader, local files"),
                        ("cached_first", "  + disk cache, 1st epoch (writes it)"),
                        ("cached", "  + disk cache, 2nd epoch (reads it)"),
                        ("s3", "StreamLoader, s3:// on moto"), ("per_row", "per-row IterableDataset + DataLoader")):
        if kind not in results:
            continue
        r = results[kind]
        rate = r["rows"] / r["seconds"]
        note = (f"+ {r['prepare_s']:.1f} s to read and transform first" if kind == "memory"
                else f"{r['rows']:,} rows timed" if kind == "per_row"
                else f"cache: {r['cache_bytes'] / 2**20:,.0f} MiB on disk" if kind == "cached" else "")
        print(f"{label:44} {rate:12,.0f} {rate / memory_rate:9.3f}x {r['peak'] / 2**20:8.0f} MiB  {note}")
    stream_rate = results["stream"]["rows"] / results["stream"]["seconds"]
    per_row_rate = results["per_row"]["rows"] / results["per_row"]["seconds"]
    cached_rate = cached["rows"] / cached["seconds"]
    print(f"StreamLoader / per-row: {stream_rate / per_row_rate:.1f}x uncached, {cached_rate / per_row_rate:.1f}x"
          f" cached epochs (target >= 20x); StreamLoader / BatchLoader: {stream_rate / memory_rate:.3f}x uncached,"
          f" {cached_rate / memory_rate:.3f}x cached epochs (target >= 0.5x); load average"
          f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    limit_gib = dataset.run_bytes(16) / 4 / GiB
    stream_peak, stream_s, _ = train_peak(str(data), str(root / "run-stream"), limit_gib, args.train_steps)
    memory_peak, memory_s, _ = train_peak(str(data), str(root / "run-memory"), 64.0, args.train_steps)
    for run in ("run-stream", "run-memory"):
        subprocess.run(["rm", "-rf", str(root / run)], check=True)
    print(f"\ntorchkeep train, {args.train_steps} steps of 1024 rows, --in-memory-gib {limit_gib:.3f}"
          f" (the dataset is 4x that):")
    print(f"  streamed:   peak RSS {stream_peak / 2**20:6.0f} MiB = --in-memory-gib + {(stream_peak - limit_gib * GiB) / 2**20:.0f} MiB"
          f"  ({stream_s:.1f} s, with the one-pass fit)")
    print(f"  read whole: peak RSS {memory_peak / 2**20:6.0f} MiB  ({memory_s:.1f} s)")


def s3_worker(data: Path, schema_path: Path, per_row_rows: int) -> dict:
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket="bench")
        for path in sorted(data.rglob("*.parquet")):
            client.upload_file(str(path), "bench", f"flights/{path.relative_to(data).as_posix()}")
        return run_worker("s3", "s3://bench/flights/", str(schema_path), per_row_rows, env)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
