"""The one-pass schema fit of a streamed parquet dataset equals TableSchema.fit on the same rows in memory:
vocabularies, counts, column typing and hygiene exactly; medians, quantiles and scaling within tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from torchkeep.data.parquet import open_dataset
from torchkeep.data.sketch import QuantileSketch
from torchkeep.data.table import TableSchema
from torchkeep.data.table_stream_fit import fit_streamed
from torchkeep.errors import DataError


def messy_table(rows: int, seed: int = 0) -> pl.DataFrame:
    """flights-like columns and every case of column hygiene: an identifier, a rare-valued id, numbers as
    text, a constant, an all-null column, a wide integer, nulls in a target's rows."""
    rng = np.random.default_rng(seed)
    delay = rng.normal(10, 30, rows)
    return pl.DataFrame({
        "carrier": rng.choice(["AA", "DL", "UA", "WN", "B6"], rows, p=[0.4, 0.3, 0.2, 0.08, 0.02]),
        "gate": pl.Series([None if m else g for g, m in zip(rng.choice(["A", "B", "C"], rows), rng.random(rows) < 0.1)]),
        "weekend": rng.random(rows) < 0.3,
        "hour": rng.integers(5, 23, rows),
        "distance": rng.integers(100, 5000, rows),
        "dep_delay": delay,
        "temperature": pl.Series([None if m else float(t) for t, m in zip(rng.normal(15, 8, rows), rng.random(rows) < 0.1)]),
        "flight_id": [f"F{i:07d}" for i in rng.permutation(rows)],
        "crash_id": [f"C{i // 2}" for i in range(rows)],
        "price_text": [f"{v:.2f}" for v in rng.gamma(2, 50, rows)],
        "constant": ["same"] * rows,
        "empty": pl.Series([None] * rows, dtype=pl.Float64),
        "rare_level": rng.choice(["x", "y", "z", "w"], rows, p=[0.5, 0.4, 0.0995, 0.0005]),
        "late": pl.Series([None if m else bool(v) for v, m in zip(delay + rng.normal(0, 10, rows) > 15,
                                                                  rng.random(rows) < 0.01)]),
    })


def write_dataset(frame: pl.DataFrame, root: Path, files: int, row_group_rows: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(frame.height), files)):
        frame[part].write_parquet(root / f"part-{i:03d}.parquet", row_group_size=row_group_rows)


OPTIONS = [
    {},
    {"scaling": "robust", "numeric_encoding": "ple", "numeric_bins": 16, "min_level_count": 3},
    {"categorical": ["distance", "crash_id"], "continuous": ["hour"], "drop": ["gate"], "max_integer_levels": 10},
    {"scaling": "robust", "numeric_encoding": "ple", "integer_levels_as_numbers": True, "min_level_count": None},
]


@pytest.mark.parametrize("options", OPTIONS)
def test_one_pass_fit_equals_the_in_memory_fit(tmp_path: Path, options: dict) -> None:
    write_dataset(messy_table(6_000), tmp_path / "data", files=5, row_group_rows=500)
    dataset = open_dataset(str(tmp_path / "data"))
    streamed = fit_streamed(dataset, dataset.fragments, [], target="late", **options)
    frame = dataset.read_all().filter(pl.col("late").is_not_null())
    memory = TableSchema.fit(frame, target="late", **options)
    assert streamed.notes == memory.notes
    assert streamed.target == memory.target
    assert streamed.categorical == memory.categorical  # levels, their order and null flags: exactly
    assert streamed.null_targets == dataset.rows - frame.height
    assert sum(streamed.train_rows) == frame.height
    assert [c.name for c in streamed.continuous] == [c.name for c in memory.continuous]
    for got, expected in zip(streamed.continuous, memory.continuous):
        assert (got.median, got.center, got.scale, got.missing_indicator, got.scaling) == (
            expected.median, expected.center, expected.scale, expected.missing_indicator, expected.scaling)
        assert got.mean == pytest.approx(expected.mean, rel=1e-9, abs=1e-9)
        assert got.std == pytest.approx(expected.std, rel=1e-9)
        assert got.edges == expected.edges  # below the sketch's capacity its quantiles are numpy's


def test_quantiles_beyond_the_sketch_capacity_are_within_its_tolerance() -> None:
    rng = np.random.default_rng(3)
    values = rng.lognormal(0, 2, 400_000)
    sketch = QuantileSketch(capacity=4096)
    for chunk in np.array_split(values, 37):
        sketch.add(chunk)
    qs = np.linspace(0, 1, 17)[1:-1]
    ranks = np.searchsorted(np.sort(values), sketch.quantiles(qs)) / len(values)
    bound = np.log2(len(values) / 4096) / 4096  # the module's stated worst case
    assert np.abs(ranks - qs).max() <= bound


def test_sketches_merge_to_the_counts_of_both() -> None:
    rng = np.random.default_rng(4)
    first, second = rng.normal(0, 1, 50_000), rng.normal(5, 1, 30_000)
    a, b = QuantileSketch(capacity=1024), QuantileSketch(capacity=1024)
    a.add(first)
    b.add(second)
    a.merge(b)
    assert a.count == 80_000
    assert sum(len(x) * 2**h for h, level in enumerate(a.levels) for x in level) == 80_000  # weight kept exactly
    both = np.sort(np.concatenate([first, second]))
    rank = np.searchsorted(both, a.quantiles([0.5])[0]) / len(both)
    assert abs(rank - 0.5) <= np.log2(80_000 / 1024) / 1024


def test_validation_fragments_with_a_label_unseen_in_training_are_named(tmp_path: Path) -> None:
    frame = pl.DataFrame({"x": np.arange(100.0), "y": ["a", "b"] * 40 + ["c"] * 20})
    (tmp_path / "d").mkdir()
    frame[:80].write_parquet(tmp_path / "d" / "a.parquet")
    frame[80:].write_parquet(tmp_path / "d" / "b.parquet")
    dataset = open_dataset(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"label\(s\) 'c' not seen in training"):
        fit_streamed(dataset, dataset.fragments[:1], dataset.fragments[1:], target="y")


def test_nan_in_any_row_group_names_the_file_row_group_and_column(tmp_path: Path) -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, float("nan"), 4.0] * 10, "y": [0, 1] * 20})
    (tmp_path / "d").mkdir()
    frame.write_parquet(tmp_path / "d" / "a.parquet", row_group_size=8)
    dataset = open_dataset(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"a\.parquet \(row group 0\): column 'x' has 2 NaN/inf value\(s\)"):
        fit_streamed(dataset, dataset.fragments, [], target="y")
