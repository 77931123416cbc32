"""`torchkeep predict` and `torchkeep evaluate` on runs of `torchkeep.fit`: tensors from .npy / .npz /
.safetensors in, the same outputs as the Python API out (.npy, .safetensors, .csv, .parquet); a file
that does not fit the model is one line naming the file and what was expected, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

CUSTOM = Path(__file__).parents[1] / "custom"
sys.path.insert(0, str(CUSTOM))
from own_models import SmallImageNet, TwoInputs, Widths, blobs

import torchkeep
from torchkeep.training.metrics import multiclass_metrics

SETTINGS = {"epochs": 1, "batch_size": 32, "seed": 1, "quiet": True}


def cli(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`torchkeep ARGS` in a process that can import own_models, as a user's shell can import the user's module."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(CUSTOM)) if p)
    return subprocess.run([sys.executable, "-m", "torchkeep", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": path}, check=False)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs `image` (model(input)), `two` (model(pixels=, hour=)) and `callable` (no task), and input files."""
    root = tmp_path_factory.mktemp("own-cli")
    torch.manual_seed(0)
    torchkeep.fit(SmallImageNet(), blobs(200, seed=0), run_dir=str(root / "image"), **SETTINGS)
    images, labels = blobs(200, seed=1)
    hours = torch.randint(0, 24, (200,), generator=torch.Generator().manual_seed(2))
    torchkeep.fit(TwoInputs(), {"pixels": images, "hour": hours, "target": labels}, run_dir=str(root / "two"), **SETTINGS)
    torchkeep.fit(SmallImageNet(), blobs(200, seed=3), run_dir=str(root / "callable"), metrics=None,
                  loss=torch.nn.CrossEntropyLoss(), **SETTINGS)
    images, labels = blobs(40, seed=4)
    np.save(root / "images.npy", images.numpy())
    np.savez(root / "labelled.npz", input=images.numpy(), target=labels.numpy())
    save_file({"pixels": images, "hour": torch.arange(40) % 24, "target": labels}, root / "two.safetensors")
    return root


def python_outputs(workdir: Path, run: str, inputs) -> torch.Tensor:
    return torchkeep.load(str(workdir / run)).predict(inputs)


def test_predict_npy_to_npy_and_safetensors_equals_the_python_api(workdir):
    images = torch.from_numpy(np.load(workdir / "images.npy"))
    expected = python_outputs(workdir, "image", images)
    for out in ("out.npy", "out.safetensors"):
        done = cli("predict", "image", "--data", "images.npy", "--out", out, cwd=workdir)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"wrote 40 predictions to {out}"
    assert torch.equal(torch.from_numpy(np.load(workdir / "out.npy")), expected)
    assert torch.equal(load_file(workdir / "out.safetensors")["output"], expected)
    assert torch.equal(torchkeep.load(str(workdir / "image")).predict(str(workdir / "images.npy")), expected)


@pytest.mark.parametrize("out", ["table.csv", "table.parquet"])
def test_predict_to_a_table_has_outputs_predictions_and_probabilities(workdir, out):
    done = cli("predict", "image", "--data", "labelled.npz", "--out", out, cwd=workdir)  # "target" is ignored
    assert done.returncode == 0, done.stderr
    expected = python_outputs(workdir, "image", torch.from_numpy(np.load(workdir / "images.npy")))
    table = pl.read_csv(workdir / out) if out.endswith(".csv") else pl.read_parquet(workdir / out)
    assert table.columns == ["output_0", "output_1", "output_2", "prediction", "probability_0", "probability_1",
                             "probability_2"]
    outputs = torch.tensor(table.select("output_0", "output_1", "output_2").to_numpy(), dtype=torch.float32)
    assert torch.equal(outputs, expected)  # float32 written in full (CSV: the shortest exact text)
    assert table["prediction"].to_list() == expected.argmax(dim=1).tolist()
    probabilities = torch.tensor(table.select("probability_0", "probability_1", "probability_2").to_numpy())
    torch.testing.assert_close(probabilities, torch.softmax(expected.double(), dim=1))


def test_named_inputs_from_safetensors_and_npz(workdir):
    tensors = load_file(workdir / "two.safetensors")
    inputs = {"pixels": tensors["pixels"], "hour": tensors["hour"]}
    np.savez(workdir / "two.npz", **{name: t.numpy() for name, t in inputs.items()})
    expected = python_outputs(workdir, "two", inputs)
    for data in ("two.safetensors", "two.npz"):
        done = cli("predict", "two", "--data", data, "--out", "two-out.npy", cwd=workdir)
        assert done.returncode == 0, done.stderr
        assert torch.equal(torch.from_numpy(np.load(workdir / "two-out.npy")), expected)


def test_evaluate_gives_the_metrics_of_the_runs_task(workdir):
    done = cli("evaluate", "image", "--data", "labelled.npz", "--json", cwd=workdir)
    assert done.returncode == 0, done.stderr
    with np.load(workdir / "labelled.npz") as arrays:
        images, labels = torch.from_numpy(arrays["input"]), torch.from_numpy(arrays["target"])
    expected = multiclass_metrics(python_outputs(workdir, "image", images), labels)
    assert json.loads(done.stdout) == pytest.approx(expected, rel=1e-6)
    assert torchkeep.load(str(workdir / "image")).evaluate((images, labels)) == expected

    done = cli("evaluate", "two", "--data", "two.safetensors", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["accuracy", "log_loss"]


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr.removeprefix("error: ").strip()


def test_a_file_that_does_not_fit_is_one_line_naming_it(workdir):
    np.save(workdir / "flat.npy", np.zeros((5, 16), dtype=np.float32))
    np.save(workdir / "labels.npy", np.zeros(5, dtype=np.int64))
    (workdir / "damaged.npz").write_bytes(b"PK\x03\x04 not really a zip file")
    cases = [
        (("predict", "image", "--data", "flat.npy", "--out", "x.npy"),
         "flat.npy: the array should be float32 [N, 1, 4, 4] (rows of the training tensors), got float32 [5, 16]"),
        (("predict", "image", "--data", "labels.npy", "--out", "x.npy"),
         "labels.npy: the array should be float32 [N, 1, 4, 4] (rows of the training tensors), got int64 [5]"),
        (("predict", "image", "--data", "damaged.npz", "--out", "x.npy"), "damaged.npz: cannot read as npz: "),
        (("predict", "image", "--data", "nowhere.npy", "--out", "x.npy"), "nowhere.npy: no such file"),
        (("predict", "image", "--data", "images.csv", "--out", "x.npy"),
         "images.csv: a model trained with torchkeep.fit reads tensors from .npy, .npz or .safetensors (got '.csv')"),
        (("predict", "image", "--data", "images.npy", "--out", "x.json"),
         "x.json: unsupported output type '.json' (expected .npy, .safetensors, .csv or .parquet)"),
        (("predict", "two", "--data", "images.npy", "--out", "x.npy"),
         ("images.npy: no array named 'pixels'; the model takes pixels, hour (has: input; a .npy file holds one array:"
         " use .npz or .safetensors)")),
        (("evaluate", "image", "--data", "images.npy"),
         ("images.npy: no array named 'target' (has: input); evaluate needs the inputs and a 'target' array"
         " (.npz or .safetensors)")),
        (("evaluate", "callable", "--data", "labelled.npz"), "callable: no metrics on record to evaluate with: "),
    ]
    for args, message in cases:
        assert one_line_error(cli(*args, cwd=workdir)).startswith(message), args
    assert not (workdir / "x.npy").exists()


def test_binary_and_regression_runs_get_their_predictions(tmp_path):
    images, labels = blobs(120, seed=5)
    np.save(tmp_path / "images.npy", images[:10].numpy())
    torch.manual_seed(0)
    torchkeep.fit(Widths(16, classes=1), (images, labels == 1), run_dir=str(tmp_path / "binary"), **SETTINGS)
    torchkeep.fit(Widths(16, classes=1), (images, labels.float() * 1.5), run_dir=str(tmp_path / "regression"), **SETTINGS)
    for run in ("binary", "regression"):
        done = cli("predict", run, "--data", "images.npy", "--out", f"{run}.csv", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    logits = python_outputs(tmp_path, "binary", images[:10]).reshape(-1)
    binary = pl.read_csv(tmp_path / "binary.csv")
    assert binary.columns == ["output_0", "prediction", "probability_0", "probability_1"]
    assert binary["prediction"].to_list() == (logits > 0).long().tolist()
    torch.testing.assert_close(torch.tensor(binary["probability_1"].to_numpy()), torch.sigmoid(logits.double()))
    values = python_outputs(tmp_path, "regression", images[:10]).reshape(-1)
    regression = pl.read_csv(tmp_path / "regression.csv")
    assert regression.columns == ["output_0", "prediction"]
    assert torch.equal(torch.tensor(regression["prediction"].to_numpy(), dtype=torch.float32), values)


def test_predict_reads_and_writes_s3(s3, workdir):
    bucket = s3.new_bucket()
    s3.client().put_object(Bucket=bucket, Key="in/images.npy", Body=(workdir / "images.npy").read_bytes())
    done = cli("predict", "image", "--data", f"s3://{bucket}/in/images.npy", "--out", f"s3://{bucket}/out/preds.parquet",
               cwd=workdir)
    assert done.returncode == 0, done.stderr
    written = s3.client().get_object(Bucket=bucket, Key="out/preds.parquet")["Body"].read()
    table = pl.read_parquet(written)
    expected = python_outputs(workdir, "image", torch.from_numpy(np.load(workdir / "images.npy")))
    assert torch.equal(torch.tensor(table.select("output_0", "output_1", "output_2").to_numpy()), expected)
    missing = cli("predict", "image", "--data", f"s3://{bucket}/in/nothing.npy", "--out", "x.npy", cwd=workdir)
    assert f"s3://{bucket}/in/nothing.npy" in one_line_error(missing)
