"""Images through the CLI as a user runs it: the built-in digits, a folder of class sub-folders with a bad
file in it, predict / evaluate on a folder, resume of an image run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from torchkeep.data.builtin import get_example


def write_digit_folder(root: Path, count: int, offset: int = 0) -> list[int]:
    """`count` digits as 8x8 gray PNGs in class sub-folders (0/, 1/, ...); their labels in sorted-file order."""
    with np.load(get_example("digits").path) as arrays:
        images, labels = arrays["images"][offset : offset + count], arrays["labels"][offset : offset + count]
    for index, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{index:04d}.png")
    return [int(label) for _, label in sorted((f"{lab}/{i:04d}", lab) for i, lab in enumerate(labels))]


@pytest.fixture(scope="module")
def digits_run(torchkeep, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("digits")
    result = torchkeep("train", "--example", "digits", "--epochs", 1, "--run-dir", "digits-run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir, result


def test_train_example_digits_for_one_epoch(digits_run):
    workdir, result = digits_run
    accuracy = float(re.search(r"^validation: .*accuracy ([0-9.]+)", result.stdout, re.MULTILINE).group(1))
    assert accuracy > 0.5  # one epoch of a small CNN on 1,617 digits: far above chance (0.1)
    bundle = json.loads((workdir / "digits-run" / "bundle" / "bundle.json").read_text())
    assert bundle["preprocessor"]["kind"] == "image" and bundle["architecture"] == "image_cnn"
    assert bundle["preprocessor"]["schema"]["height"] == 8


def test_predict_and_evaluate_a_folder_of_pngs(torchkeep, digits_run):
    workdir, _ = digits_run
    labels = write_digit_folder(workdir / "more", 40, offset=1700)
    predicted = torchkeep("predict", "digits-run", "--data", "more", "--out", "preds.csv", cwd=workdir)
    evaluated = torchkeep("evaluate", "digits-run", "--data", "more", "--json", cwd=workdir)
    assert predicted.returncode == 0, predicted.stderr
    assert evaluated.returncode == 0, evaluated.stderr
    predictions = pl.read_csv(workdir / "preds.csv")
    assert predictions.height == 40 and {"file", "prediction", "probability_0"} <= set(predictions.columns)
    accuracy = float((predictions["prediction"].to_numpy() == np.array(labels)).mean())
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(accuracy)


def test_a_corrupt_image_stops_training_with_one_line_and_no_run_left(torchkeep, tmp_path):
    write_digit_folder(tmp_path / "photos", 30)
    (tmp_path / "photos" / "3" / "broken.png").write_bytes(b"not an image at all")
    result = torchkeep("train", "--data", "photos", "--epochs", 1, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "photos/3/broken.png: not a readable image" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()

    skipped = torchkeep("train", "--data", "photos", "--epochs", 1, "--run-dir", "run", "--skip-bad-images", cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 1 unreadable image(s)" in skipped.stderr and "broken.png" in skipped.stderr


def test_an_image_run_resumes_from_its_checkpoint(torchkeep, tmp_path):
    import torchkeep as api

    first = api.train(example="digits", epochs=2, run_dir=str(tmp_path / "run"), quiet=True, stop_at_step=30)
    assert first.bundle == ""
    resumed = torchkeep("train", "--resume", "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


def test_images_over_the_memory_budget_stream_from_files_and_resume_exactly(tmp_path):
    import torchkeep as api
    from torchkeep.checkpoint import format as checkpoint_format
    from torchkeep.checkpoint import tensors as tensor_files
    from torchkeep.storage import open_storage

    write_digit_folder(tmp_path / "photos", 120)
    settings = {"image_memory_bytes": 1000, "epochs": 2, "batch_size": 16, "num_workers": 1, "augment_pad": 1,
                "quiet": True, "threads": 1}
    whole = api.train(str(tmp_path / "photos"), run_dir=str(tmp_path / "whole"), **settings)
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["data"]["streaming"] is True
    api.train(str(tmp_path / "photos"), run_dir=str(tmp_path / "cut"), stop_at_step=9, **settings)  # mid-epoch 2
    api.train(resume=str(tmp_path / "cut"), quiet=True)
    last = checkpoint_format.checkpoint_name(whole.state.step)
    weights = [tensor_files.decode(checkpoint_format.read_checkpoint(open_storage(str(tmp_path / run)), last)[1]
                                   ["model.safetensors"], run) for run in ("whole", "cut")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_toml_config_chooses_the_image_model(torchkeep, tmp_path):
    (tmp_path / "digits.toml").write_text('[data]\nexample = "digits"\naugment_pad = 2\n\n'
                                          '[vision]\narchitecture = "mlp"\nhidden_sizes = [64]\n')
    result = torchkeep("train", "digits.toml", "--epochs", 1, "--dropout", 0.2, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    assert bundle["architecture"] == "image_mlp"
    assert bundle["model_args"]["hidden_sizes"] == [64] and bundle["model_args"]["dropout"] == 0.2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["augment_pad"] == 2 and config["train"]["batch_size"] == 64  # the image default


def test_pool_flatten_from_the_command_line_is_the_bundles_model(torchkeep, tmp_path):
    result = torchkeep("train", "--example", "digits", "--pool", "flatten", "--epochs", 1, "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    bundle = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    assert bundle["model_args"]["pool"] == "flatten"
    import torchkeep as api

    assert api.load(str(tmp_path / "run")).model.head.in_features == 64 * 2 * 2
    bad = torchkeep("train", "--example", "digits", "--pool", "max", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'max'" in bad.stderr
