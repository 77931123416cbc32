"""Small frames (a served request, a predict call of a few rows) take a dict-lookup path in
TableSchema.transform; it must encode exactly what the polars path encodes, nulls, unseen levels,
other integer and float widths and bad values included."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from torchkeep.data import table
from torchkeep.data.table import TableSchema
from torchkeep.errors import DataError


def _both_paths(schema: TableSchema, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, dict]:
    monkeypatch.setattr(table, "SMALL_FRAME_ROWS", 10**9)
    small = schema.transform(frame, with_target=False)
    monkeypatch.setattr(table, "SMALL_FRAME_ROWS", 0)
    polars_path = schema.transform(frame, with_target=False)
    return small, polars_path


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def test_small_frames_encode_like_the_polars_path(make_table, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = TableSchema.fit(make_table(300, seed=0), target="late")
    assert schema.categorical and any(c.missing_indicator for c in schema.continuous)
    later = make_table(40, seed=1)
    # unseen levels, nulls where training had none, and other widths of the same kinds
    later = later.with_columns(
        pl.when(pl.int_range(pl.len()) % 3 == 0).then(pl.lit("ZZ")).otherwise(pl.col("carrier")).alias("carrier"),
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(None).otherwise(pl.col("dep_delay")).alias("dep_delay"),
        pl.when(pl.int_range(pl.len()) % 5 == 0).then(None).otherwise(pl.col("weekend")).alias("weekend"),
        pl.col("hour").cast(pl.Int32),
        pl.col("temperature").cast(pl.Float32),
    )
    for rows in (slice(0, 1), slice(3, 4), slice(0, 7), slice(0, 40)):
        small, polars_path = _both_paths(schema, later[rows], monkeypatch)
        _assert_same(small, polars_path)
    assert small["categorical"][0, 0] == 0  # "ZZ" was never seen: index 0


def test_columns_that_need_a_cast_still_take_the_polars_path(make_table, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = TableSchema.fit(make_table(300), target="late")
    as_text = make_table(5, seed=2).with_columns(pl.col("hour").cast(pl.String), pl.col("dep_delay").cast(pl.String))
    small, polars_path = _both_paths(schema, as_text, monkeypatch)
    _assert_same(small, polars_path)


def test_a_nan_in_a_small_frame_gets_the_same_error(make_table, monkeypatch: pytest.MonkeyPatch) -> None:
    schema = TableSchema.fit(make_table(300), target="late")
    bad = make_table(3, seed=3).with_columns(pl.Series("dep_delay", [1.0, float("nan"), 2.0]))
    messages = []
    for limit in (10**9, 0):
        monkeypatch.setattr(table, "SMALL_FRAME_ROWS", limit)
        with pytest.raises(DataError) as error:
            schema.transform(bad, with_target=False, source="req")
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert "'dep_delay'" in messages[0] and "NaN/inf" in messages[0]
