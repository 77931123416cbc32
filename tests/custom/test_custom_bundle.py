"""The bundle of a user's own model: rebuilt by import path wherever the class is importable (never
unpickled), predicting what the trained model predicts; a clear line where it is not; constructor
arguments given, read back or unknown; TorchScript / ONNX exports that match the model; an s3:// run."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from own_models import Opaque, SmallImageNet, Widths, blobs
from safetensors.torch import load_file, save_file

import torchkeep
from torchkeep.errors import CheckpointError, ConfigError, DataError
from torchkeep.export.exporter import export

HERE = Path(__file__).parent
SETTINGS = {"epochs": 1, "batch_size": 32, "seed": 1, "quiet": True}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torchkeep.ModelRun]:
    run_dir = tmp_path_factory.mktemp("own") / "run"
    torch.manual_seed(0)
    result = torchkeep.fit(SmallImageNet(), blobs(300, seed=0), blobs(60, seed=1), run_dir=str(run_dir), **SETTINGS)
    return run_dir, result


def python(code: str, *, with_models: bool, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter, with or without the models' module on PYTHONPATH."""
    paths = [os.environ.get("PYTHONPATH", "")] + ([str(HERE)] if with_models else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_load_rebuilds_the_model_by_import_path_in_another_process(trained, tmp_path: Path) -> None:
    run_dir, result = trained
    images = blobs(50, seed=7)[0]
    save_file({"input": images}, tmp_path / "images.safetensors")
    code = ("import torchkeep; from safetensors.torch import load_file, save_file;"
            f" predictor = torchkeep.load({str(run_dir / 'bundle')!r});"
            " save_file({'output': predictor.predict(load_file('images.safetensors')['input'])}, 'out.safetensors');"
            " print(type(predictor).__name__, predictor.task, predictor.meta['model_args']['import'])")
    done = python(code, with_models=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TensorPredictor", "multiclass", "own_models:SmallImageNet"]
    with torch.no_grad():
        expected = result.model.eval()(images)
    assert torch.equal(load_file(tmp_path / "out.safetensors")["output"], expected)


def test_without_the_class_on_the_path_one_line_names_the_import_path(trained, tmp_path: Path) -> None:
    run_dir, _ = trained
    done = python(f"import torchkeep; torchkeep.load({str(run_dir)!r})", with_models=False, cwd=tmp_path)
    assert done.returncode != 0
    assert "CheckpointError: cannot import the model class own_models:SmallImageNet (No module named 'own_models')" in done.stderr
    assert "torchkeep export RUN --format pt2|onnx|torchscript" in done.stderr

    cli = subprocess.run([sys.executable, "-m", "torchkeep", "predict", str(run_dir), "--data", "x.csv", "--out", "y.csv"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert cli.returncode == 2
    assert cli.stderr.startswith("error: cannot import the model class own_models:SmallImageNet") and cli.stderr.count("\n") == 1


def test_predict_checks_the_inputs_against_the_training_tensors(trained) -> None:
    run_dir, _ = trained
    predictor = torchkeep.load(str(run_dir))
    images = blobs(10, seed=3)[0]
    assert torch.equal(predictor.predict(images.double()), predictor.predict(images))  # floats: cast to float32
    assert torch.equal(predictor.predict(images.numpy()), predictor.predict(images))
    with pytest.raises(DataError, match=r"input 'input' should be float32 \[N, 1, 4, 4\], got float32 \[10, 16\]"):
        predictor.predict(images.flatten(1))
    with pytest.raises(DataError, match="takes tensors, not tables"):
        predictor.predict("new.csv")


def test_constructor_arguments_given_read_back_or_unknown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = blobs(64, seed=0)
    widths = torchkeep.fit(Widths(16, hidden=8), data, run_dir=str(tmp_path / "widths"), **SETTINGS)
    assert json.loads((tmp_path / "widths" / "model.json").read_text())["args"]["args"] == \
        {"in_features": 16, "hidden": 8, "classes": 3}  # read back from the attributes of the same names
    assert torch.equal(torchkeep.load(widths.bundle).predict(data[0]), widths.model.eval()(data[0]))

    given = torchkeep.fit(Opaque(8), data, run_dir=str(tmp_path / "given"), model_args={"width": 8}, **SETTINGS)
    assert torch.equal(torchkeep.load(given.bundle).predict(data[0]), given.model.eval()(data[0]))
    with pytest.raises(ConfigError, match="model_args do not rebuild the model: Opaque.*other tensors or shapes"):
        torchkeep.fit(Opaque(8), data, run_dir=str(tmp_path / "wrong"), model_args={"width": 9}, **SETTINGS)

    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        unknown = torchkeep.fit(Opaque(8), data, run_dir=str(tmp_path / "unknown"), **SETTINGS)
    assert "the constructor arguments of Opaque are not known (no value found for width): pass model_args" in caplog.text
    with pytest.raises(CheckpointError, match="does not record the constructor arguments of own_models:Opaque"):
        torchkeep.load(unknown.bundle)
    assert load_file(tmp_path / "unknown" / "bundle" / "model.safetensors").keys() == unknown.model.state_dict().keys()
    program = torch.export.load(str(tmp_path / "unknown" / "export" / "model.pt2")).module()  # runs without the class
    assert torch.allclose(program(data[0]), unknown.model.eval()(data[0]), atol=1e-6)


def test_a_plain_nn_sequential_is_rebuilt_from_its_childrens_arguments(tmp_path: Path) -> None:
    data = blobs(64, seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8, bias=False), torch.nn.BatchNorm1d(8),
                                torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Linear(8, 3))
    result = torchkeep.fit(model, data, run_dir=str(tmp_path / "seq"), **SETTINGS)
    spec = json.loads((tmp_path / "seq" / "model.json").read_text())["args"]
    assert spec["import"] == "torch.nn.modules.container:Sequential"
    children = spec["args"]["*"]
    assert [child["import"].rsplit(":", 1)[1] for child in children] == [
        "Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    assert children[1]["args"]["in_features"] == 16 and children[1]["args"]["bias"] is None  # bias=False
    code = ("import torchkeep, torch; from safetensors.torch import load_file, save_file;"
            f" p = torchkeep.load({str(tmp_path / 'seq')!r});"
            f" save_file({{'out': p.predict(load_file({str(tmp_path / 'x.safetensors')!r})['x'])}}, 'out.safetensors')")
    save_file({"x": data[0]}, tmp_path / "x.safetensors")
    done = python(code, with_models=False, cwd=tmp_path)  # a process that knows only torch's classes
    assert done.returncode == 0, done.stderr
    with torch.no_grad():  # another process: its thread count may round the BatchNorm'd sums otherwise
        assert torch.allclose(load_file(tmp_path / "out.safetensors")["out"], result.model.eval()(data[0]), atol=1e-6)


def test_an_nn_sequential_with_a_child_that_cannot_be_rebuilt_keeps_its_weights(tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    data = blobs(64, seed=0)
    model = torch.nn.Sequential(torch.nn.Flatten(), Opaque(8))
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        result = torchkeep.fit(model, data, run_dir=str(tmp_path / "seq"), **SETTINGS)
    assert "Opaque (child 1 of the nn.Sequential) cannot be rebuilt from plain values" in caplog.text
    with pytest.raises(CheckpointError, match="does not record the constructor arguments of torch.nn.modules.container"):
        torchkeep.load(result.bundle)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_and_onnx_exports_match_the_model(trained, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    import onnxruntime

    run_dir, result = trained
    images = blobs(40, seed=5)[0]
    with torch.no_grad():
        expected = result.model.eval()(images)

    scripted = export(str(run_dir), format="torchscript", out=str(tmp_path / "ts"))
    assert scripted.parity.max_abs_diff <= 1e-5
    assert torch.allclose(torch.jit.load(scripted.path)(images), expected, atol=1e-6)

    onnx = export(str(run_dir), format="onnx", out=str(tmp_path / "model.onnx"))
    session = onnxruntime.InferenceSession(onnx.path, providers=["CPUExecutionProvider"])
    assert torch.allclose(torch.from_numpy(session.run(None, {"input": images.numpy()})[0]), expected, atol=1e-5)
    spec = json.loads((tmp_path / "inputs.json").read_text())
    assert spec["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 4, 4]}]
    assert spec["output"]["shape"] == ["batch", 3] and spec["model"]["import"] == "own_models:SmallImageNet"
    assert 'session.run(None, {"input": input})' in (tmp_path / "README.txt").read_text()


def test_the_export_command_parity_checks_on_the_tensors_given(trained, tmp_path: Path) -> None:
    run_dir, _ = trained
    save_file({"input": blobs(30, seed=8)[0]}, tmp_path / "rows.safetensors")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(HERE)])}
    done = subprocess.run([sys.executable, "-m", "torchkeep", "export", str(run_dir), "--format", "pt2", "--out", "out",
                           "--data", "rows.safetensors"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "exported pt2: out/model.pt2" in done.stdout
    assert "on 30 rows of rows.safetensors" in done.stdout


def test_an_s3_run_directory_trains_resumes_and_loads(s3, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    run_dir = f"s3://{bucket}/runs/own"
    data, valid = blobs(200, seed=0), blobs(40, seed=1)
    settings = {**SETTINGS, "epochs": 2, "deterministic": True, "every_steps": 3}
    torch.manual_seed(0)
    expected = torchkeep.fit(SmallImageNet(), data, valid, run_dir=str(tmp_path / "local"), **settings)
    torch.manual_seed(0)
    torchkeep.fit(SmallImageNet(), data, valid, run_dir=run_dir, stop_at_step=10, **settings)  # epoch 2, batch 3
    resumed = torchkeep.fit(SmallImageNet(), data, valid, run_dir=run_dir, resume=True, **settings)

    assert resumed.state.step == expected.state.step == 14
    assert all(torch.equal(a, b) for a, b in zip(expected.model.state_dict().values(), resumed.model.state_dict().values()))
    images = blobs(20, seed=4)[0]
    assert torch.equal(torchkeep.load(run_dir).predict(images), torchkeep.load(expected.bundle).predict(images))
