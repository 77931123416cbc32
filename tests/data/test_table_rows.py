"""TableRows (rows straight to tensors) against the one definition, TableSchema.transform of the rows'
frame, on generated tables: every task, both scalings, piecewise-linear bins or none, nulls, unseen
levels, integers sent as floats, strings and booleans in numeric columns, NaN, missing keys, text
columns. Both must give identical tensors or identical errors; plain rows must take the fast road."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from torchkeep.data.table import TableSchema
from torchkeep.data.table_rows import TableRows, frame_records, output_records, rows_frame
from torchkeep.data.text import PackedText

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORDS = ["good", "bad", "tasty", "stale", "fresh", "cheap", "great"]


@st.composite
def tables(draw: st.DrawFn) -> tuple[pl.DataFrame, dict[str, Any]]:
    """A training frame of every column kind and the options TableSchema.fit gets."""
    rows = draw(st.integers(40, 80))  # > 32 distinct distances: continuous
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame = pl.DataFrame({
        "city": pl.Series([None if rng.random() < 0.1 else str(rng.choice(["Oslo", "Lima", "Pune", "Ürümqi"]))
                           for _ in range(rows)], dtype=pl.String),
        "hour": rng.integers(0, 6, rows),
        "weekend": rng.random(rows) < 0.4,
        "price": pl.Series([None if rng.random() < 0.15 else float(v) for v in rng.lognormal(2, 1, rows)]),
        "distance": rng.integers(-10_000, 10_000, rows),
        "rating": [f" {v:.2f}" for v in rng.normal(3, 1, rows)],  # numbers stored as text: read as numbers
    })
    options: dict[str, Any] = {
        "scaling": draw(st.sampled_from(["robust", "standard"])),
        "numeric_encoding": draw(st.sampled_from(["ple", "periodic", "none"])),
        "numeric_bins": draw(st.integers(2, 8)),
        "integer_levels_as_numbers": draw(st.booleans()),
    }
    if draw(st.booleans()):
        frame = frame.with_columns(review=pl.Series([" ".join(rng.choice(WORDS, 3)) for _ in range(rows)]))
        options["text"] = ["review"]
    task = draw(st.sampled_from(["binary", "multiclass", "regression"]))
    target = {"binary": rng.random(rows) < 0.5, "multiclass": rng.choice(["a", "b", "c"], rows),
              "regression": rng.normal(0, 5, rows)}[task]
    return frame.with_columns(y=pl.Series(target)), {"task": task, **options}


# Values as a JSON body holds them; each column gets plain ones mostly, odd ones sometimes.
ODD = st.sampled_from([None, True, False, "12.5", " 7 ", "abc", "", 2.5, 3.0, -0.0, 2**60, 10**30,
                       float("nan"), float("inf"), "\ud800", [1], {"a": 1}])
PLAIN = {
    "city": st.sampled_from([None, "Oslo", "Lima", "Ürümqi", "Quito"]),
    "hour": st.one_of(st.sampled_from([None, 0, 3, 5, 9, -1]), st.sampled_from([2.0, 4.0, 7.0])),
    "weekend": st.sampled_from([None, True, False]),
    "price": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000),
                       st.sampled_from([1.7e308, -1.7e308, 5e-324])),
    "distance": st.one_of(st.none(), st.integers(-20_000, 20_000), st.floats(-1e5, 1e5, allow_nan=False)),
    "rating": st.one_of(st.none(), st.floats(-10, 10, allow_nan=False)),
    "review": st.one_of(st.none(), st.sampled_from(["good and tasty", "UNSEEN words", "bad, bad!", "café naïve"])),
}


@st.composite
def requests(draw: st.DrawFn, odd: bool = True) -> list[dict[str, Any]]:
    rows = []
    for _ in range(draw(st.integers(1, 6))):
        row = {}
        for name, plain in PLAIN.items():
            choice = draw(st.integers(0, 29)) if odd else 0
            if choice == 0 and odd and draw(st.booleans()):
                continue  # the key is missing from this row
            row[name] = draw(ODD) if choice == 1 else draw(plain)
        rows.append(row)
    return rows


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "tensors", call()
    except Exception as error:  # the error itself is what is compared
        return type(error).__name__, str(error)


def assert_same(fast: tuple[str, Any], reference: tuple[str, Any]) -> None:
    assert fast[0] == reference[0], (fast, reference)
    if fast[0] != "tensors":
        assert fast[1] == reference[1]
        return
    a, b = fast[1], reference[1]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], PackedText):
            assert [torch.equal(x, y) and torch.equal(o, p) for (x, o), (y, p) in zip(a[key].columns, b[key].columns)] \
                == [True] * len(b[key].columns)
            continue
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), (key, a[key], b[key])


def fitted(table: tuple[pl.DataFrame, dict[str, Any]]) -> TableSchema:
    frame, options = table
    return TableSchema.fit(frame, target="y", **options)


@SETTINGS
@given(table=tables(), rows=requests(), packed=st.booleans())
def test_rows_encode_like_the_frame_or_fail_alike(table, rows, packed):
    schema = fitted(table)
    event("fast road" if TableRows(schema).encode(rows) is not None else "frame road")
    fast = outcome(lambda: TableRows(schema).transform(rows, source="req", packed_text=packed))
    reference = outcome(lambda: schema.transform(rows_frame(rows, schema, "req"), with_target=False,
                                                 source="req", packed_text=packed))
    event(f"outcome: {reference[0]}")
    assert_same(fast, reference)


@SETTINGS
@given(table=tables(), rows=requests(odd=False))
def test_plain_rows_take_the_fast_road_and_encode_like_the_frame(table, rows):
    schema = fitted(table)
    encoded = TableRows(schema).encode(rows, packed_text=True)
    assert encoded is not None
    reference = schema.transform(rows_frame(rows, schema), with_target=False, packed_text=True)
    assert_same(("tensors", encoded), ("tensors", reference))


@SETTINGS
@given(table=tables(), outputs=st.lists(st.floats(-1e4, 1e4) | st.sampled_from([math.nan, math.inf, -math.inf, 88.7]),
                                        min_size=3, max_size=18))
def test_output_records_equal_the_decoded_frames_records(table, outputs):
    schema = fitted(table)
    assert schema.target is not None
    width = schema.target.output_size
    tensor = torch.tensor(outputs[: len(outputs) // width * width], dtype=torch.float32).reshape(-1, width)
    assert output_records(schema.target, tensor) == frame_records(schema.decode(tensor))


def test_a_row_that_is_not_an_object_is_one_error_naming_it(make_table):
    schema = TableSchema.fit(make_table(100), target="late")
    with pytest.raises(Exception, match=r"req: row 1 is a list; expected an object"):
        TableRows(schema).transform([{"carrier": "AA"}, [1, 2]], source="req")
