"""A small real table with the CLI defaults only: Palmer penguins (344 rows, 3 species, nulls in five
columns), as a new user would meet it. The defaults must classify the held-out fifth almost perfectly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

PENGUINS = Path(__file__).parent / "data" / "penguins.csv"


def test_penguins_with_the_defaults(torchkeep, tmp_path: Path) -> None:
    frame = pl.read_csv(PENGUINS)
    order = np.random.default_rng(0).permutation(frame.height)
    cut = int(frame.height * 0.8)
    frame[order[:cut]].write_csv(tmp_path / "train.csv")
    frame[order[cut:]].write_csv(tmp_path / "test.csv")
    result = torchkeep("train", "--data", "train.csv", "--target", "species", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = torchkeep("predict", "run", "--data", "test.csv", "--out", "predictions.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predictions = pl.read_csv(tmp_path / "predictions.csv")
    accuracy = (predictions["prediction"] == predictions["species"]).mean()
    assert accuracy >= 0.95, accuracy
