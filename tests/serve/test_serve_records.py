"""How decoded predictions become JSON records: one object per row, None where the output is not finite
(the server answers 422 naming that row: JSON has no NaN)."""

from __future__ import annotations

import math

import polars as pl

from torchkeep.data.table_rows import frame_records as records


def test_regression_records_are_numbers_and_non_finite_rows_are_none():
    frame = pl.DataFrame({"prediction": [1.5, math.nan, -2.0, math.inf]})

    assert records(frame) == [{"prediction": 1.5}, None, {"prediction": -2.0}, None]


def test_classification_records_carry_probabilities_per_label():
    frame = pl.DataFrame({"prediction": ["cat", "dog", "cat"], "probability_cat": [0.9, 0.2, math.nan],
                          "probability_dog": [0.1, 0.8, math.nan]})

    assert records(frame) == [
        {"prediction": "cat", "probabilities": {"cat": 0.9, "dog": 0.1}},
        {"prediction": "dog", "probabilities": {"cat": 0.2, "dog": 0.8}},
        None,
    ]
