"""A model with a text column exports like a table model: the class-free formats take the token ids
(`text` int32 [N, T, L]) as a third input and pass the parity check on real rows."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import torchkeep
from torchkeep.export.exporter import export


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    rng = np.random.default_rng(0)
    good = rng.random(120) < 0.5
    words = {True: ["great", "tasty"], False: ["stale", "bad"]}
    frame = pl.DataFrame({"review": [f"{rng.choice(words[bool(g)])} tea box" for g in good],
                          "price": rng.normal(10, 2, 120), "score": np.where(good, "great", "other").tolist()})
    root = tmp_path_factory.mktemp("text-export")
    frame.write_csv(root / "reviews.csv")
    torchkeep.train(str(root / "reviews.csv"), target="score", text_columns=["review"], max_tokens=16,
                    run_dir=str(root / "run"), epochs=1, quiet=True)
    return root


@pytest.mark.parametrize("export_format", ["torchscript", "pt2", "onnx"])
def test_a_text_model_exports_and_matches_the_eager_model(text_run, export_format, tmp_path):
    result = export(str(text_run / "run"), format=export_format, out=str(tmp_path / "export"))

    assert result.parity.max_abs_diff <= 1e-5 and result.parity.rows == 120
    spec = json.loads((tmp_path / "export/inputs.json").read_text())
    assert [i["name"] for i in spec["inputs"]] == ["categorical", "continuous", "text"]
    assert spec["inputs"][2]["shape"] == ["batch", 1, 16]
    assert "text  int32 [batch, 1, 16]" in (tmp_path / "export/README.txt").read_text()


def test_a_torchscript_text_model_runs_on_token_ids_from_the_schema(text_run, tmp_path):
    export(str(text_run / "run"), format="torchscript", out=str(tmp_path / "model.pt"))
    predictor = torchkeep.load(str(text_run / "run"))
    rows = pl.DataFrame({"review": ["great tea", "stale box"], "price": [10.0, 10.0]})
    inputs = predictor.schema.transform(rows, with_target=False)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    with torch.no_grad():
        assert torch.allclose(scripted(inputs["categorical"], inputs["continuous"], inputs["text"]),
                              predictor.model(**inputs), atol=1e-6)
