"""`--numeric-encoding periodic`: the periodic embeddings live in the model (learned frequencies), the
schema keeps only the scaling; predict, every class-free export and serving give the run's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import torchkeep
from torchkeep.cli import main
from torchkeep.data.io import read_table
from torchkeep.export.parity import TOLERANCE
from torchkeep.models.tabular import PeriodicEmbeddings


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory: pytest.TempPathFactory, make_table) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("periodic")
    data = root / "flights.csv"
    make_table(300, seed=1).write_csv(data)
    torchkeep.train(str(data), target="late", epochs=2, batch_size=64, run_dir=str(root / "run"), quiet=True,
                    numeric_encoding="periodic")
    return root / "run", data


def test_the_model_embeds_the_scaled_values_and_the_schema_has_no_bins(periodic_run) -> None:
    run_dir, _ = periodic_run
    schema = json.loads((run_dir / "schema.json").read_text())
    model = json.loads((run_dir / "model.json").read_text())
    widths = [1 + c["missing_indicator"] for c in schema["continuous"]]
    assert all(not c["edges"] for c in schema["continuous"]) and all(c["scaling"] == "robust" for c in schema["continuous"])
    # each column's scaled value (not its missing indicator) gets an embedding
    assert model["args"]["periodic"]["positions"] == [sum(widths[:i]) for i in range(len(widths))]
    assert any(c["missing_indicator"] for c in schema["continuous"])  # the fixture's table has nulls
    predictor = torchkeep.load(str(run_dir))
    assert isinstance(predictor.model.periodic, PeriodicEmbeddings)
    assert predictor.model.periodic.frequencies.shape == (len(widths), 8)


@pytest.mark.parametrize("export_format", ["torchscript", "pt2", "onnx"])
def test_exports_predict_like_the_run(periodic_run, capsys, tmp_path: Path, export_format: str) -> None:
    run_dir, data = periodic_run
    out = tmp_path / export_format
    assert main(["export", str(run_dir), "--format", export_format, "--out", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    (path,) = [p for p in out.iterdir() if p.name.startswith("model.")]
    frame = read_table(str(data))
    expected = torchkeep.load(str(run_dir)).predict(frame)
    found = torchkeep.load(str(path)).predict(frame)
    assert found["prediction"].equals(expected["prediction"])
    assert (found["probability_True"] - expected["probability_True"]).abs().max() <= TOLERANCE


def test_periodic_embedding_is_per_column() -> None:
    """Column j's embedding depends on column j's value only (a per-column map, not a mix)."""
    torch.manual_seed(0)
    layer = PeriodicEmbeddings(3, frequencies=4, dim=5, sigma=1.0)
    x = torch.randn(6, 3)
    moved = x.clone()
    moved[:, 1] += 1.0
    a, b = layer(x).view(6, 3, 5), layer(moved).view(6, 3, 5)
    assert torch.equal(a[:, 0], b[:, 0]) and torch.equal(a[:, 2], b[:, 2])
    assert not torch.equal(a[:, 1], b[:, 1])
