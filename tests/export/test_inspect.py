"""`torchkeep inspect`: checkpoints, runs, bundles, .pth dicts and .safetensors files, local and s3://,
read without running anything from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import torchkeep
from torchkeep.cli import main


def inspect(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def inspect_json(capsys: pytest.CaptureFixture[str], path: object) -> dict:
    status, stdout, stderr = inspect(capsys, path, "--json")
    assert status == 0, stderr
    return json.loads(stdout)


def tensors(report: dict, file_name: str) -> dict[str, tuple[str, list[int]]]:
    file = next(f for f in report["files"] if f["name"] == file_name)
    return {t["name"]: (t["dtype"], t["shape"]) for t in file["tensors"]}


def model_parameters(run_dir: Path) -> int:
    return sum(t.numel() for t in torchkeep.load(str(run_dir)).model.state_dict().values())


def test_a_checkpoint(tiny_run, capsys) -> None:
    checkpoint = next((tiny_run.run_dir / "checkpoints").glob("step-*"))
    report = inspect_json(capsys, checkpoint)
    assert report["kind"] == "checkpoint" and report["valid"] is True
    assert {f["name"]: f["manifest"] for f in report["files"]} == {
        "model.safetensors": "ok", "state.json": "ok", "state.safetensors": "ok"}
    meta = report["metadata"]
    assert meta["step"] == int(checkpoint.name.removeprefix("step-")) and meta["epoch"] == 1
    assert meta["task"] == "binary" and "valid_roc_auc" in meta["metrics"]
    assert meta["optimizer"]["hyperparameters"]["weight_decay"] == 0.01
    assert tensors(report, "model.safetensors")["embeddings.0.weight"] == ("float32", [5, 3])
    assert tensors(report, "state.safetensors")["optimizer.state.0.exp_avg"] == ("float32", [5, 3])
    assert report["parameter_count"] == model_parameters(tiny_run.run_dir)

    status, stdout, _ = inspect(capsys, checkpoint)
    assert status == 0 and "validity: valid (every file matches the manifest)" in stdout
    assert "embeddings.0.weight" in stdout


def test_a_bundle_and_a_run(tiny_run, capsys) -> None:
    report = inspect_json(capsys, tiny_run.run_dir / "bundle")
    assert report["kind"] == "bundle" and report["valid"] is True
    meta = report["metadata"]
    assert meta["task"] == "binary" and meta["target"] == "late" and meta["labels"] == [False, True]
    assert meta["versions"]["torch"] == torch.__version__ and "valid_roc_auc" in meta["metrics"]
    assert report["parameter_count"] == model_parameters(tiny_run.run_dir)

    run = inspect_json(capsys, tiny_run.run_dir)
    assert run["kind"] == "run" and run["valid"] is True and run["metadata"]["status"] == "complete"
    assert [c["status"] for c in run["checkpoints"]] == ["complete"]
    assert run["metadata"]["latest"] == run["checkpoints"][0]["name"]
    assert run["bundle"]["parameter_count"] == report["parameter_count"]


def test_a_tampered_bundle_is_invalid(tiny_run, capsys, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_run.run_dir / "bundle", bundle)
    weights = bundle / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    status, stdout, _ = inspect(capsys, bundle)
    assert status == 1
    assert "validity: INVALID: model.safetensors:" in stdout and "manifest: mismatch" in stdout


def test_a_seed_style_pth(tmp_path: Path, capsys) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(3, 4)).sum().backward()
    optimizer.step()
    torch.save({"epoch": 4, "model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
                "loss": torch.tensor(0.25)}, tmp_path / "old.pth")
    report = inspect_json(capsys, tmp_path / "old.pth")
    assert report["kind"] == "pickle" and report["valid"] is None
    meta = report["metadata"]
    assert meta["layout"] == "checkpoint dict" and meta["epoch"] == 4 and meta["loss"] == 0.25
    assert meta["optimizer"]["hyperparameters"]["lr"] == 0.01 and meta["optimizer"]["parameters_with_state"] == 4
    found = tensors(report, "old.pth")
    assert found["model_state_dict.0.weight"] == ("float32", [8, 4])
    assert found["optimizer_state_dict.state.0.exp_avg_sq"] == ("float32", [8, 4])
    assert report["parameter_count"] == 4 * 8 + 8 + 8 + 1  # the model's, not the optimizer's

    torch.save(model.state_dict(), tmp_path / "weights.pt")
    bare = inspect_json(capsys, tmp_path / "weights.pt")
    assert bare["metadata"]["layout"] == "state_dict" and bare["parameter_count"] == 49


def test_safetensors_files(tiny_run, tmp_path: Path, capsys) -> None:
    save_file({"w": torch.zeros(2, 3), "b": torch.zeros(3, dtype=torch.float16)}, tmp_path / "m.safetensors",
              metadata={"source": "elsewhere"})
    report = inspect_json(capsys, tmp_path / "m.safetensors")
    assert report["kind"] == "safetensors" and report["valid"] is None and report["parameter_count"] == 9
    assert report["metadata"]["header_metadata"] == {"source": "elsewhere"}
    assert tensors(report, "m.safetensors") == {"b": ("float16", [3]), "w": ("float32", [2, 3])}

    # Inside a checkpoint, the file is checked against the manifest next to it.
    in_checkpoint = next((tiny_run.run_dir / "checkpoints").glob("step-*")) / "model.safetensors"
    report = inspect_json(capsys, in_checkpoint)
    assert report["valid"] is True and report["files"][0]["manifest"] == "ok"


def test_a_pickle_that_would_run_code_is_refused(planted_pickle, capsys) -> None:
    # The planted file really runs code when loaded the unsafe way...
    proof, proof_marker = planted_pickle("proof.pth")
    torch.load(proof, weights_only=False)["note"].close()
    assert proof_marker.exists()

    # ...and inspect refuses it, naming what it asked for, without running it.
    path, marker = planted_pickle("planted.pth")
    status, stdout, stderr = inspect(capsys, path)
    assert status == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"error: {path}: refused: the pickle asks for io.open to load, which could run code; only tensors,"
        " numbers, strings and containers are read (torch.load weights_only=True)"]
    assert not marker.exists()


def test_refusals_and_missing_paths_are_one_line(tiny_run, capsys, tmp_path: Path) -> None:
    scripted = tmp_path / "scripted.pt"
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 1)), scripted)
    status, _, stderr = inspect(capsys, scripted)
    assert status == 2 and "refused: a TorchScript archive holds a program" in stderr
    for path, message in ((tmp_path / "absent.pth", "no such file"), (tmp_path / "absent", "no such file or directory"),
                          (tiny_run.data, "not a file inspect reads")):
        status, _, stderr = inspect(capsys, path)
        assert status == 2 and stderr.startswith(f"error: {path}: {message}")
        assert len(stderr.strip().splitlines()) == 1


def test_on_s3(tiny_run, s3, capsys, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    client = s3.client()
    for file in (tiny_run.run_dir / "bundle").iterdir():
        client.upload_file(str(file), bucket, f"bundle/{file.name}")
    torch.save({"epoch": 2, "model_state_dict": torch.nn.Linear(3, 1).state_dict()}, tmp_path / "old.pth")
    client.upload_file(str(tmp_path / "old.pth"), bucket, "old/old.pth")

    bundle = inspect_json(capsys, f"s3://{bucket}/bundle")
    assert bundle["kind"] == "bundle" and bundle["valid"] is True
    assert bundle["parameter_count"] == model_parameters(tiny_run.run_dir)
    old = inspect_json(capsys, f"s3://{bucket}/old/old.pth")
    assert old["metadata"]["epoch"] == 2 and old["parameter_count"] == 4
