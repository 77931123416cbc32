"""`torchkeep checkpoints RUN --verify-resume`: a user's own check that resume is exact."""

from __future__ import annotations

import json

from safetensors.torch import load_file, save_file


def test_verify_resume_reports_identical_tensors(torchkeep, flights_csv, tmp_path):
    trained = torchkeep("train", "--data", flights_csv, "--target", "late", "--epochs", 2, "--batch-size", 32,
                        "--checkpoint-every-steps", 4, "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr

    result = torchkeep("checkpoints", "run", "--verify-resume", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["identical"] is True
    assert report["tensors_compared"] > 10  # model weights and optimizer moments, not just a few
    assert report["to_step"] > report["from_step"]

    text = torchkeep("checkpoints", "run", "--verify-resume", cwd=tmp_path)
    assert text.returncode == 0 and "identical" in text.stdout


def test_verify_resume_detects_a_checkpoint_that_does_not_follow(torchkeep, flights_csv, tmp_path):
    trained = torchkeep("train", "--data", flights_csv, "--target", "late", "--epochs", 2, "--batch-size", 32,
                        "--checkpoint-every-steps", 4, "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    newest = checkpoints[-1]
    # Re-commit the newest checkpoint with one weight nudged (manifest rewritten to match): valid
    # as a checkpoint, but not what replaying from the previous one produces.
    weights = load_file(newest / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-3
    save_file(weights, newest / "model.safetensors")
    manifest = json.loads((newest / "MANIFEST.json").read_text())
    import hashlib

    data = (newest / "model.safetensors").read_bytes()
    manifest["files"]["model.safetensors"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (newest / "MANIFEST.json").write_text(json.dumps(manifest))

    result = torchkeep("checkpoints", "run", "--verify-resume", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "DIFFERENT" in result.stdout and name in result.stdout


def test_verify_resume_needs_two_checkpoints(torchkeep, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    result = torchkeep("checkpoints", "run", "--verify-resume", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "later one" in result.stderr
