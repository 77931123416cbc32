"""StreamLoader: every row exactly once per epoch, whole batches, and a resume from any batch continues
with exactly the batches an uninterrupted loader gives."""

from __future__ import annotations

import tempfile
from pathlib import Path
from unittest.mock import patch

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from torchkeep.data import stream
from torchkeep.data.parquet import open_dataset
from torchkeep.data.stream import StreamLoader
from torchkeep.data.table import TableSchema
from torchkeep.data.table_spec import ContinuousColumn, TargetSpec
from torchkeep.errors import DataError

# A schema that passes the row id through unchanged (float32 holds these integers exactly)
ROW_ID = TableSchema([], [ContinuousColumn("rid", median=0.0, mean=0.0, std=1.0, missing_indicator=False)],
                     TargetSpec("y", "regression"))


def write_fragments(root: Path, files: list[list[int]]) -> int:
    """Files of row groups of the given sizes, rows numbered 0.. in order; the number of rows."""
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for number, groups in enumerate(files):
        writer = None
        for size in groups:
            table = pl.DataFrame({"rid": np.arange(start, start + size, dtype=np.float64),
                                  "y": np.zeros(size)}).to_arrow()
            writer = writer or pq.ParquetWriter(root / f"part-{number:03d}.parquet", table.schema)
            writer.write_table(table, row_group_size=size)
            start += size
        if writer is not None:
            writer.close()
    return start


def loader_for(root: Path, batch_size: int, buffer_rows: int, seed: int = 0, shuffle: bool = True) -> StreamLoader:
    dataset = open_dataset(str(root))
    return StreamLoader(dataset, dataset.fragments, [f.rows for f in dataset.fragments], ROW_ID, batch_size,
                        shuffle=shuffle, seed=seed, buffer_bytes=buffer_rows * 8, read_ahead_bytes=3 * 8 * 7)


def ids(batch: dict[str, torch.Tensor]) -> list[int]:
    return batch["continuous"][:, 0].long().tolist()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=st.lists(st.lists(st.integers(1, 40), min_size=1, max_size=4), min_size=1, max_size=4),
       batch_size=st.integers(1, 50), buffer_rows=st.integers(1, 120), seed=st.integers(0, 2**31),
       stop=st.floats(0, 1), decode_rows=st.integers(1, 60))
def test_every_row_once_per_epoch_and_resume_at_any_batch_continues_exactly(files, batch_size, buffer_rows, seed, stop,
                                                                           decode_rows):
    with tempfile.TemporaryDirectory() as directory, patch.object(stream, "DECODE_ROWS", decode_rows):
        rows = write_fragments(Path(directory) / "d", files)
        loader = loader_for(Path(directory) / "d", batch_size, buffer_rows, seed)
        assert len(loader) == -(-rows // batch_size)
        epochs = [[ids(b) for b in loader] for _ in range(2)]
        for batches in epochs:
            assert sorted(i for batch in batches for i in batch) == list(range(rows))  # each row exactly once
            assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
            assert len(batches) == len(loader)
        # stop after some batches of the second epoch, resume in a fresh loader: the same batches follow
        cut = int(stop * len(loader))
        first = loader_for(Path(directory) / "d", batch_size, buffer_rows, seed)
        list(first)
        iterator = iter(first)
        for _ in range(cut):
            next(iterator)
        state = first.state_dict()
        resumed = loader_for(Path(directory) / "d", batch_size, buffer_rows, seed)
        resumed.load_state_dict(state)
        assert [ids(b) for b in resumed] == epochs[1][cut:]
        assert resumed.epoch == 2 and resumed.position == 0


def test_epochs_differ_and_the_same_seed_gives_the_same_order(tmp_path: Path) -> None:
    write_fragments(tmp_path / "d", [[50, 50], [50], [30, 20]])
    a, b = loader_for(tmp_path / "d", 16, 120, seed=3), loader_for(tmp_path / "d", 16, 120, seed=3)
    first_a, first_b = [ids(x) for x in a], [ids(x) for x in b]
    assert first_a == first_b
    assert [ids(x) for x in a] != first_a  # epoch 2's order is its own
    rows = [i for batch in first_a for i in batch]
    assert rows != sorted(rows)


def test_without_shuffle_rows_come_in_file_order(tmp_path: Path) -> None:
    rows = write_fragments(tmp_path / "d", [[7, 5], [9]])
    loader = loader_for(tmp_path / "d", 4, 10, shuffle=False)
    assert [i for batch in loader for i in ids(batch)] == list(range(rows))


def test_a_state_for_other_data_is_refused(tmp_path: Path) -> None:
    write_fragments(tmp_path / "a", [[10, 10]])
    write_fragments(tmp_path / "b", [[10, 11]])
    state = loader_for(tmp_path / "a", 4, 10).state_dict()
    with pytest.raises(DataError, match="the data changed since the checkpoint was written"):
        loader_for(tmp_path / "b", 4, 10).load_state_dict(state)


def test_a_fragment_that_changed_under_a_run_is_named(tmp_path: Path) -> None:
    write_fragments(tmp_path / "d", [[10]])
    dataset = open_dataset(str(tmp_path / "d"))
    loader = StreamLoader(dataset, dataset.fragments, [9], ROW_ID, 4)
    with pytest.raises(DataError, match=r"part-000\.parquet \(row group 0\): 10 rows with a target, 9 when the run"):
        list(loader)
