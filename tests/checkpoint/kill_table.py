"""The small table and flags that the kill tests train on, shared by test_kill and test_kill_campaign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

# 5,400 training rows (6,000 less 10% for validation) in batches of 128: 43 steps per epoch
TRAIN_FLAGS = ["--target", "late", "--epochs", 2, "--batch-size", 128, "--checkpoint-every-steps", 5,
               "--deterministic", "--dropout", 0.1, "--seed", 1]


def flights_frame(rows: int = 6_000) -> pl.DataFrame:
    """A small flights-like table (seeded): origin, hour, distance, dep_delay and the target `late`."""
    rng = np.random.default_rng(0)
    origin = rng.choice(["EWR", "JFK", "LGA"], rows)
    hour = rng.integers(5, 23, rows)
    distance = rng.gamma(2.0, 400.0, rows)
    dep_delay = rng.normal(10, 30, rows)
    late = dep_delay + 2 * (origin == "EWR") + 0.2 * (hour - 14) + rng.normal(0, 10, rows) > 15
    return pl.DataFrame({"origin": origin, "hour": hour, "distance": distance, "dep_delay": dep_delay, "late": late})


def write_table(path: Path, rows: int = 6_000) -> None:
    flights_frame(rows).write_csv(path)
