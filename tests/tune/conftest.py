"""Studies of `torchkeep tune` on a sample of the built-in flights table, run as a user runs them.

`flights_split` writes 2,400 training and 600 validation rows of the built-in flights data as parquet
files (an explicit validation file, so that `evaluate` can score the best trial on exactly the rows the
study validated on). `tune_args` are the flags of a tiny 4-trial study: 4 epochs a trial, ASHA deciding
after epochs 1 and 2, two trials at a time with one thread each.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from torchkeep.data.builtin import get_example
from torchkeep.tune.cluster import leftover_pids, temp_dir_for


@pytest.fixture(scope="session")
def flights_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("flights")
    frame = pl.read_parquet(get_example("flights").path).sample(3000, seed=1)
    frame[:2400].write_parquet(folder / "train.parquet")
    frame[2400:].write_parquet(folder / "valid.parquet")
    return folder / "train.parquet", folder / "valid.parquet"


@pytest.fixture(scope="session")
def tune_args() -> Callable[[Path, Path, Path], list[str]]:
    """`tune_args(train, valid, study)`: the `torchkeep tune` arguments of the tiny study."""
    return lambda train, valid, study: ["tune", "--data", str(train), "--valid", str(valid), "--target", "late", "--trials", "4",
            "--concurrent", "2", "--epochs", "4", "--grace-period", "1", "--reduction-factor", "2",
            "--ensemble-size", "1", "--run-dir", str(study)]


@pytest.fixture(scope="session")
def ray_processes() -> Callable[[Path], list[int]]:
    """`ray_processes(study)`: processes of the study's local Ray still alive (none once a study has ended)."""
    return lambda study: leftover_pids(temp_dir_for(os.fspath(study))[0])
