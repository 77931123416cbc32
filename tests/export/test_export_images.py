"""`torchkeep export` of an image run: every format, loaded back with nothing but torch / onnxruntime,
answers like `predict` on real images; the files next to it say what the input is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import torchkeep
from torchkeep.cli import main
from torchkeep.data.builtin import get_example


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("export-images") / "run"
    torchkeep.train(example="digits", epochs=1, run_dir=str(run_dir), quiet=True)
    return run_dir


@pytest.mark.parametrize("export_format", ["torchscript", "pt2", "onnx", "state-dict", "bundle"])
def test_export_of_an_image_run_answers_like_predict(digits_run: Path, tmp_path: Path, export_format: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    if export_format == "onnx":
        pytest.importorskip("onnxruntime")
    assert main(["export", str(digits_run), "--format", export_format, "--out", str(tmp_path / "out")]) == 0
    assert "parity: max abs diff" in capsys.readouterr().out
    with np.load(get_example("digits").path) as arrays:
        pixels = torch.from_numpy(arrays["images"][1780:1787, None].copy())  # 7 images: not the traced batch size
    predictor = torchkeep.load(str(digits_run))
    with torch.no_grad():
        want = predictor.model(pixels)
    files = {p.name: p for p in (tmp_path / "out").iterdir()}
    if export_format == "bundle":
        got = torchkeep.load(str(tmp_path / "out")).predict(pixels)
        assert got["prediction"].to_list() == predictor.predict(pixels)["prediction"].to_list()
        return
    assert json.loads(files["inputs.json"].read_text())["inputs"]["image"]["shape"] == ["batch", 1, 8, 8]
    if export_format == "torchscript":
        got = torch.jit.load(str(files["model.pt"]))(pixels)
    elif export_format == "pt2":
        got = torch.export.load(str(files["model.pt2"])).module()(pixels)
    elif export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(files["model.onnx"]), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": pixels.numpy()})[0])
    else:
        model = predictor.model.__class__(**json.loads(files["inputs.json"].read_text())["model"]["args"])
        model.load_state_dict(torch.load(files["model.pth"], weights_only=True))
        got = model.eval()(pixels)
    assert torch.allclose(got.detach(), want, atol=1e-4)
