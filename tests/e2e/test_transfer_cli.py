"""`torchkeep train --init-from RUN --freeze PATTERN`: a user fine-tunes one run from another."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

COMMON = ("--target", "late", "--batch-size", 32, "--hidden-sizes", "16,8", "--ensemble-size", 1, "--threads", 1, "--quiet")


@pytest.fixture
def pretrained(torchkeep, flights_csv, tmp_path):
    result = torchkeep("train", "--data", flights_csv, "--epochs", 1, "--run-dir", "base", *COMMON, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path / "base"


def test_init_from_a_run_with_frozen_parts_leaves_them_bit_identical(torchkeep, flights_csv, pretrained, tmp_path):
    # Same data and seed: same split and vocabularies, so every tensor lines up by position.
    result = torchkeep("train", "--data", flights_csv, "--epochs", 2, "--run-dir", "tuned",
                       "--init-from", "base", "--freeze", "embeddings.*", "--freeze", "continuous_norm.*,mlp.0.*",
                       *COMMON[:-1], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before = load_file(pretrained / "bundle" / "model.safetensors")
    # Progress (and the init report) goes to stderr; stdout keeps the result lines.
    assert f"(bundle): loaded {len(before)}, skipped 0, newly initialised 0" in result.stderr
    after = load_file(tmp_path / "tuned" / "bundle" / "model.safetensors")
    frozen = [k for k in before if k.startswith(("embeddings.", "continuous_norm.", "mlp.0."))]
    trained = [k for k in before if k not in frozen and k.endswith("weight")]
    assert len(frozen) >= 8 and sorted(trained) == ["head.weight", "mlp.2.weight"]
    assert [k for k in frozen if not torch.equal(before[k], after[k])] == []
    assert [k for k in trained if torch.equal(before[k], after[k])] == []


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("--freeze", "features.*"), "--freeze 'features.*' matches no parameter of the model (its parameters: embeddings.0.weight"),
        (("--unfreeze-at", 2), "unfreeze_at needs something frozen: add --freeze PATTERN"),
        (("--freeze", "mlp.*", "--unfreeze-at", 9), "unfreeze_at 9 is after the last epoch (1)"),
        (("--backbone-lr-mult", 0), "backbone_lr_mult must be > 0 (got 0.0)"),
        (("--init-from", "nowhere"), "/nowhere: no such run, bundle or file"),
    ],
)
def test_bad_transfer_settings_are_one_line_and_leave_no_run(torchkeep, flights_csv, tmp_path, flags, expected):
    result = torchkeep("train", "--data", flights_csv, "--epochs", 1, "--run-dir", "run", *flags, *COMMON, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_verify_resume_holds_for_a_run_unfrozen_midway(torchkeep, flights_csv, pretrained, tmp_path):
    result = torchkeep("train", "--data", flights_csv, "--epochs", 2, "--run-dir", "gradual", "--init-from", "base",
                       "--freeze", "mlp.*", "--unfreeze-at", 2, "--backbone-lr-mult", 0.5,
                       "--checkpoint-every-steps", 4, *COMMON, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # 9 batches an epoch: the last two checkpoints (16, 18) are after the unfreeze at step 9.
    report = torchkeep("checkpoints", "gradual", "--verify-resume", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    verified = json.loads(report.stdout)
    assert verified["identical"] is True and verified["from_step"] > 9


def test_transfer_settings_from_toml(torchkeep, flights_csv, pretrained, tmp_path):
    (tmp_path / "tune.toml").write_text(
        f'[data]\npath = "{flights_csv}"\n\n[train.transfer]\ninit_from = "base"\nfreeze = ["embeddings.*"]\n'
        'backbone_lr_mult = 0.5\nrename = {"unused." = "nothing."}\n')
    result = torchkeep("train", "tune.toml", "--epochs", 1, "--run-dir", "tuned", *COMMON, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "tuned" / "config.json").read_text())["train"]["transfer"]
    assert saved["freeze"] == ["embeddings.*"] and saved["backbone_lr_mult"] == 0.5
    assert saved["init_from"] == str(tmp_path / "base")  # made absolute: a restart finds it from anywhere
    before = load_file(pretrained / "bundle" / "model.safetensors")
    after = load_file(tmp_path / "tuned" / "bundle" / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("embeddings."))
