"""Predictor.predict_records: rows as JSON gives them -> JSON records, by the rows road up to
FAST_PATH_ROWS and the frame road beyond, with the model as TorchScript only where that is bit for bit
the eager model."""

from __future__ import annotations

import pytest
import torch

import torchkeep
from torchkeep.errors import DataError
from torchkeep.data import table_rows
from torchkeep.data.table_rows import frame_records, rows_frame
from torchkeep.predict import predictor as predictor_module
from torchkeep.predict.scripted import SmallBatchModel


@pytest.fixture(scope="module")
def feature_rows(make_table):
    return lambda rows, seed: make_table(rows, seed=seed).drop("late").to_dicts()


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, make_table):
    run_dir = tmp_path_factory.mktemp("records") / "run"
    torchkeep.train(make_table(300), target="late", run_dir=str(run_dir), epochs=1, quiet=True)
    return torchkeep.load(str(run_dir / "bundle"))


def test_records_equal_the_frame_road_on_both_roads(predictor, feature_rows, monkeypatch):
    rows = feature_rows(50, 3) + [{"carrier": "ZZ", "gate": None, "weekend": None, "hour": 99.0, "distance": 10**6,
                                    "dep_delay": None, "temperature": -1e300}]
    expected = frame_records(predictor.predict_frame(rows_frame(rows, predictor.schema)))

    fast = predictor.predict_records(rows)
    monkeypatch.setattr(predictor_module, "FAST_PATH_ROWS", 10)
    monkeypatch.setattr(table_rows, "FAST_PATH_ROWS", 10)
    framed = predictor.predict_records(rows)

    assert fast == expected and framed == expected
    assert predictor.small_batch_model is not None and predictor.small_batch_model.scripted is not None


def test_bad_values_give_the_frame_roads_error(predictor, feature_rows):
    rows = feature_rows(2, 4)
    rows[1]["dep_delay"] = "soon"
    with pytest.raises(DataError, match="column 'dep_delay'"):
        predictor.predict_records(rows, source="req")


class Unscriptable(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, **tensors: torch.Tensor) -> torch.Tensor:  # **kwargs: TorchScript refuses it
        return self.linear(tensors["x"])


def test_a_model_torchscript_cannot_compile_runs_eagerly():
    model = Unscriptable().eval()
    small = SmallBatchModel(model, torch.device("cpu"))
    x = torch.randn(3, 2)
    assert small.scripted is None and torch.equal(small(x=x), model(x=x))
