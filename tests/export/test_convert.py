"""`torchkeep convert`: a practitioner's torch.save checkpoint dict becomes a torchkeep checkpoint that
`Checkpointer.restore` resumes from with identical tensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from torchkeep import Checkpointer
from torchkeep.cli import main


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def seed_style_checkpoint(path: Path, steps: int = 3, epoch: int = 5) -> tuple[nn.Module, torch.optim.Adam]:
    """The practitioner's loop: Adam stepped a few times, then torch.save of the checkpoint dict."""
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = (model(torch.randn(16, 4)) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss}, path)
    return model, optimizer


def convert(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main(["convert", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_seed_style_dict_resumes_with_identical_tensors(tmp_path: Path, capsys) -> None:
    model, optimizer = seed_style_checkpoint(tmp_path / "old.pth")
    status, stdout, stderr = convert(capsys, tmp_path / "old.pth", "--out", tmp_path / "converted")
    assert status == 0, stderr
    assert "checkpoints/step-000000003 (step 3: the optimizer's step count)" in stdout

    fresh_model = make_model()
    fresh_optimizer = torch.optim.Adam(fresh_model.parameters(), lr=0.5)
    restored = Checkpointer(str(tmp_path / "converted")).restore(model=fresh_model, optimizer=fresh_optimizer)
    assert restored is not None and restored.step == 3 and restored.epoch == 5
    assert restored.extra["epoch"] == 5
    assert torch.equal(restored.extra["loss"], torch.load(tmp_path / "old.pth", weights_only=True)["loss"])
    assert restored.metrics["loss"] == pytest.approx(restored.extra["loss"].item())

    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value), key
    original, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert loaded["param_groups"] == original["param_groups"]  # lr 1e-2 again, betas a tuple again
    for index, state in original["state"].items():
        assert loaded["state"][index].keys() == state.keys() == {"step", "exp_avg", "exp_avg_sq"}
        for name, tensor in state.items():
            assert loaded["state"][index][name].dtype == tensor.dtype
            assert torch.equal(loaded["state"][index][name], tensor), (index, name)

    # One more step from either side lands on the same weights.
    batch = torch.randn(16, 4)
    for m, o in ((model, optimizer), (fresh_model, fresh_optimizer)):
        loss = (m(batch) - 1).pow(2).mean()
        o.zero_grad()
        loss.backward()
        o.step()
    for key, value in model.state_dict().items():
        assert torch.equal(fresh_model.state_dict()[key], value), key


def test_a_bare_state_dict_and_an_explicit_step(tmp_path: Path, capsys) -> None:
    model = make_model()
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    status, stdout, stderr = convert(capsys, tmp_path / "weights.pth", "--out", tmp_path / "out", "--step", 7)
    assert status == 0, stderr
    assert "step-000000007 (step 7: from --step)" in stdout
    fresh = make_model()
    restored = Checkpointer(str(tmp_path / "out")).restore(model=fresh)
    assert restored is not None and restored.step == 7 and restored.extra == {}
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    manifest = json.loads((tmp_path / "out/checkpoints/step-000000007/MANIFEST.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "state.safetensors", "state.json"}
    assert (tmp_path / "out/checkpoints/LATEST").read_text() == "step-000000007"


def test_a_pickle_that_would_run_code_is_refused(planted_pickle, capsys, tmp_path: Path) -> None:
    path, marker = planted_pickle("planted.pth")
    status, stdout, stderr = convert(capsys, path, "--out", tmp_path / "out")
    assert status == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"error: {path}: refused: the pickle asks for io.open to load, which could run code; only tensors,"
        " numbers, strings and containers are read (torch.load weights_only=True)"]
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_what_cannot_be_converted_gets_one_line(tmp_path: Path, capsys) -> None:
    seed_style_checkpoint(tmp_path / "old.pth")
    assert convert(capsys, tmp_path / "old.pth", "--out", tmp_path / "out")[0] == 0
    status, _, stderr = convert(capsys, tmp_path / "old.pth", "--out", tmp_path / "out")
    assert status == 2 and "already holds checkpoints (step-000000003); convert into a new directory" in stderr

    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pth")
    status, _, stderr = convert(capsys, tmp_path / "odd.pth", "--out", tmp_path / "odd")
    assert status == 2
    assert stderr.strip() == (f"error: {tmp_path / 'odd.pth'}: neither a checkpoint dict with 'model_state_dict'"
                              " nor a state_dict of tensors (found: 'weights')")


def test_convert_from_and_to_s3(s3, tmp_path: Path, capsys) -> None:
    bucket = s3.new_bucket()
    model, _ = seed_style_checkpoint(tmp_path / "old.pth")
    s3.client().upload_file(str(tmp_path / "old.pth"), bucket, "legacy/old.pth")
    status, _, stderr = convert(capsys, f"s3://{bucket}/legacy/old.pth", "--out", f"s3://{bucket}/runs/converted")
    assert status == 0, stderr
    fresh = make_model()
    restored = Checkpointer(f"s3://{bucket}/runs/converted").restore(model=fresh)
    assert restored is not None and restored.extra["epoch"] == 5
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
