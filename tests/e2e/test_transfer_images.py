"""Transfer learning on images through the CLI: a CNN trained on digits 0-4 starts a run on digits 5-9
with its backbone frozen; the frozen part stays bit-identical, the head (whose classes are all new)
starts fresh and trains, and such a run resumes. Bad transfer settings leave no run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from torchkeep.data.builtin import get_example
from torchkeep.data.image_io import write_idx

COMMON = ("--epochs", 1, "--threads", 1)


def write_digits(folder: Path, digits: range) -> None:
    """The built-in digits of the given classes as an MNIST-style idx folder (what --data DIR reads)."""
    with np.load(get_example("digits").path) as arrays:
        keep = np.isin(arrays["labels"], list(digits))
        images, labels = arrays["images"][keep], arrays["labels"][keep]
    folder.mkdir()
    write_idx(str(folder / "train-images-idx3-ubyte"), images)
    write_idx(str(folder / "train-labels-idx1-ubyte"), labels.astype(np.uint8))


@pytest.fixture(scope="module")
def digit_parts(torchkeep, tmp_path_factory) -> Path:
    """A workdir with idx folders `low` (digits 0-4) and `high` (5-9), and a 1-epoch run `base` on `low`."""
    workdir = tmp_path_factory.mktemp("digit-parts")
    write_digits(workdir / "low", range(5))
    write_digits(workdir / "high", range(5, 10))
    result = torchkeep("train", "--data", "low", "--run-dir", "base", *COMMON, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "bundle" / "model.safetensors")


def test_a_frozen_backbone_ends_bit_identical_and_the_head_trains(torchkeep, digit_parts):
    result = torchkeep("train", "--data", "high", "--run-dir", "tuned", "--init-from", "base",
                       "--freeze", "features.*", *COMMON, cwd=digit_parts)
    assert result.returncode == 0, result.stderr
    assert f"init from {digit_parts / 'base'} (bundle): loaded" in result.stderr  # absolute: a resume reads it from anywhere
    assert "head rows copied by label: 0 of 5 labels known to both runs" in result.stderr
    before, after = weights(digit_parts / "base"), weights(digit_parts / "tuned")
    features = [name for name in before if name.startswith("features.")]
    # conv and BatchNorm weights, and the BatchNorm running statistics, which a training-mode forward would move
    assert any(name.endswith("running_mean") for name in features) and any(name.endswith("running_var") for name in features)
    assert [name for name in features if not torch.equal(before[name], after[name])] == []
    assert [name for name in ("head.weight", "head.bias") if torch.equal(before[name], after[name])] == []
    report = json.loads((digit_parts / "tuned" / "transfer.json").read_text())
    assert {name for name in features if name.endswith(("weight", "bias"))} <= set(report["pretrained_parameters"])
    assert {"head.weight", "head.bias"} <= set(report["new"])
    # the backbone keeps the input normalization it was trained with, not this run's statistics
    tuned_schema = json.loads((digit_parts / "tuned" / "schema.json").read_text())
    assert after["normalize.mean"].flatten().tolist() == before["normalize.mean"].flatten().tolist() != tuned_schema["mean"]


@pytest.mark.parametrize("setting", [("--freeze", "embeddings.*"), ("--init-from", "nowhere")])
def test_bad_transfer_settings_leave_no_run_directory(torchkeep, tmp_path, setting):
    result = torchkeep("train", "--example", "digits", *setting, "--run-dir", "x", *COMMON, cwd=tmp_path)
    assert result.returncode == 2
    assert setting[1] in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_an_image_run_started_from_another_resumes(torchkeep, digit_parts):
    import torchkeep as api

    run = digit_parts / "stopped"
    # 806 training images in batches of 64: 13 steps an epoch, so step 20 stops inside the second epoch.
    first = api.train(str(digit_parts / "high"), run_dir=str(run), epochs=2, threads=1, quiet=True, stop_at_step=20,
                      init_from=str(digit_parts / "base"), freeze=["features.*"])
    assert first.bundle == "" and (run / "transfer.json").exists()
    resumed = torchkeep("train", "--resume", "stopped", cwd=digit_parts)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr
    before, after = weights(digit_parts / "base"), weights(run)
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("features."))
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
