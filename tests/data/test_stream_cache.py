"""The StreamLoader's disk cache of decoded row groups: later epochs read it and give bit for bit the batches
of a loader without it; changed data is never read from it; a partial cache (a run killed in its first
epoch) resumes to the same batches; past its limit or on a failed write it falls back to parquet."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
import torch

from torchkeep.data import stream, stream_cache
from torchkeep.data.parquet import open_dataset
from torchkeep.data.stream import StreamLoader
from torchkeep.data.table import TableSchema
from torchkeep.data.table_stream_fit import fit_streamed


def write(root: Path, seed: int = 0, files: int = 4, rows: int = 300) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for number in range(files):
        frame = pl.DataFrame({
            "origin": pl.Series(np.where(rng.random(rows) < 0.1, None, rng.choice(["EWR", "JFK", "LGA"], rows)),
                                dtype=pl.String),
            "hour": rng.integers(5, 23, rows),
            "distance": pl.Series(np.where(rng.random(rows) < 0.1, np.nan, rng.gamma(2.0, 400.0, rows))).fill_nan(None),
            "late": pl.Series(rng.random(rows) < 0.3).set(pl.Series(rng.random(rows) < 0.05), None),
        })
        frame.write_parquet(root / f"part-{number}.parquet", row_group_size=rows // 3)


def fitted(root: Path) -> tuple[TableSchema, list[int]]:
    dataset = open_dataset(str(root))
    fit = fit_streamed(dataset, dataset.fragments, [], target="late", scaling="robust", numeric_encoding="ple")
    return TableSchema(fit.categorical, fit.continuous, fit.target, [], fit.notes), fit.train_rows


def loader(root: Path, schema: TableSchema, rows: list[int], cache: Path | None, **options: object) -> StreamLoader:
    dataset = open_dataset(str(root))
    return StreamLoader(dataset, dataset.fragments, rows, schema, 64, seed=3, buffer_bytes=150 * 60,
                        read_ahead_bytes=4000, cache_dir=None if cache is None else str(cache), **options)  # type: ignore[arg-type]


def epochs(loader: StreamLoader, count: int) -> list[list[dict[str, torch.Tensor]]]:
    return [list(loader) for _ in range(count)]


def same(a: list[list[dict[str, torch.Tensor]]], b: list[list[dict[str, torch.Tensor]]]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(p.keys() == q.keys() and all(torch.equal(p[k], q[k]) for k in p) for p, q in zip(x, y))
        for x, y in zip(a, b))


@pytest.mark.parametrize("decode_rows", [1, 150, 65_536])
def test_later_epochs_read_the_cache_and_give_the_batches_of_a_loader_without_it(tmp_path: Path, decode_rows: int
                                                                                  ) -> None:
    write(tmp_path / "d")
    schema, rows = fitted(tmp_path / "d")
    with patch.object(stream, "DECODE_ROWS", decode_rows):
        plain = epochs(loader(tmp_path / "d", schema, rows, None), 3)
        cached = loader(tmp_path / "d", schema, rows, tmp_path / "cache")
        got = epochs(cached, 3)
    assert same(got, plain)
    assert cached.cache is not None and cached.cache.writes == 12 and cached.cache.hits == 24
    assert len(list((tmp_path / "cache").iterdir())) == 12
    with patch.object(stream.StreamLoader, "_decode", side_effect=AssertionError("read parquet")):
        again = loader(tmp_path / "d", schema, rows, tmp_path / "cache")  # a new process: all from the cache
        assert same(epochs(again, 3), plain)


def test_a_changed_fragment_is_decoded_again_and_its_old_file_deleted(tmp_path: Path) -> None:
    write(tmp_path / "d")
    schema, rows = fitted(tmp_path / "d")
    epochs(loader(tmp_path / "d", schema, rows, tmp_path / "cache"), 1)
    before = {p.name for p in (tmp_path / "cache").iterdir()}
    path = tmp_path / "d" / "part-2.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(pl.col("distance") + 100.0).write_parquet(path, row_group_size=100)  # same rows, other values
    reference = epochs(loader(tmp_path / "d", schema, rows, None), 2)
    cached = loader(tmp_path / "d", schema, rows, tmp_path / "cache")
    assert same(epochs(cached, 2), reference)
    after = {p.name for p in (tmp_path / "cache").iterdir()}
    assert len(before - after) == 3 and len(after - before) == 3 and len(after) == 12  # part-2's three row groups
    assert cached.cache is not None and cached.cache.writes == 3


def test_a_schema_change_uses_other_files(tmp_path: Path) -> None:
    write(tmp_path / "d")
    schema, rows = fitted(tmp_path / "d")
    epochs(loader(tmp_path / "d", schema, rows, tmp_path / "cache"), 1)
    schema.continuous[0].median += 1.0
    other = loader(tmp_path / "d", schema, rows, tmp_path / "cache")
    assert other.cache is not None and other.cache.used == 0  # the old files deleted, none read
    assert same(epochs(other, 1), epochs(loader(tmp_path / "d", schema, rows, None), 1))


def test_a_resume_on_a_partial_cache_continues_with_the_same_batches(tmp_path: Path) -> None:
    write(tmp_path / "d")
    schema, rows = fitted(tmp_path / "d")
    reference = [b for e in epochs(loader(tmp_path / "d", schema, rows, None), 2) for b in e]
    first = loader(tmp_path / "d", schema, rows, tmp_path / "cache")
    iterator = iter(first)
    for _ in range(7):  # stopped in the first epoch: some row groups cached
        next(iterator)
    state = first.state_dict()
    del iterator
    files = sorted((tmp_path / "cache").iterdir())
    assert 0 < len(files) < 12
    files[0].write_bytes(files[0].read_bytes()[:100])  # a file cut short is ignored and written again
    (tmp_path / "cache" / f"{files[1].name}.123.tmp").write_bytes(b"partial")  # a write cut short: deleted
    resumed = loader(tmp_path / "d", schema, rows, tmp_path / "cache")
    resumed.load_state_dict(state)
    assert same([[b for e in epochs(resumed, 2) for b in e]], [reference[7:]])
    assert len(list((tmp_path / "cache").iterdir())) == 12


def test_past_the_limit_or_on_a_failed_write_the_rest_is_read_from_parquet(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path / "d")
    schema, rows = fitted(tmp_path / "d")
    reference = epochs(loader(tmp_path / "d", schema, rows, None), 2)
    limited = loader(tmp_path / "d", schema, rows, tmp_path / "small", cache_bytes=3 * 100 * 100)
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        assert same(epochs(limited, 2), reference)
    assert limited.cache is not None and 0 < limited.cache.writes < 12 and limited.cache.used <= 3 * 100 * 100
    assert "not cached on disk (the cache limit of 0 MiB is reached)" in caplog.text

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    failing = loader(tmp_path / "d", schema, rows, tmp_path / "full")
    with patch.object(stream_cache.os, "replace", full):
        assert same(epochs(failing, 2), reference)
    assert failing.cache is not None and failing.cache.writes == 0 and failing.cache.used == 0
    assert "No space left on device" in (failing.cache.full or "")
    assert list((tmp_path / "full").iterdir()) == []  # no temporary file left
