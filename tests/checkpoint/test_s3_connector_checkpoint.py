"""Checkpointer on S3 through the s3torchconnector backend (moto's server on 127.0.0.1, over HTTP).

The same guarantees as through boto3: bit-identical round trips and resumes, async snapshots taken
when save() is called, retention, damaged checkpoints skipped, and a process killed in the middle of
a save leaves no checkpoint that is ever loaded. Damage and checks come from another client (boto3).
"""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from small_run import Net, assert_same, make_run, train_steps, weights
from torchkeep import Checkpointer

pytest.importorskip("s3torchconnector", reason="s3torchconnector is not installed: pip install 'torchkeep[s3torchconnector]'")


@pytest.fixture
def run(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fresh run prefix; the backend and path-style addressing selected as a user would."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("TORCHKEEP_S3_BACKEND", "s3torchconnector")
    bucket = s3.new_bucket()
    return f"s3://{bucket}/run", bucket


def objects(s3, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.client().list_objects_v2(Bucket=bucket).get("Contents", []))


def test_save_then_restore_is_bit_identical_and_training_continues_the_same(s3, run) -> None:
    uri, bucket = run
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 5)
    expected = {"model": weights(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
                "scheduler": copy.deepcopy(scheduler.state_dict())}
    with Checkpointer(uri) as ck:
        assert type(ck.storage).__name__ == "S3ConnectorStorage"
        ck.save(5, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1, metrics={"valid_loss": 0.25})
    train_steps(model, optimizer, scheduler, 5)

    assert objects(s3, bucket) == ["run/checkpoints/LATEST"] + [
        f"run/checkpoints/step-000000005/{name}"
        for name in ("MANIFEST.json", "model.safetensors", "state.json", "state.safetensors")
    ]
    body = s3.client().get_object(Bucket=bucket, Key="run/checkpoints/step-000000005/model.safetensors")["Body"]
    assert_same(expected["model"], load_safetensors(body.read()), "model.safetensors read with boto3")

    fresh_model, fresh_optimizer, fresh_scheduler = make_run(seed=99)
    restored = Checkpointer(uri).restore(model=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler)
    assert (restored.step, restored.epoch, restored.metrics) == (5, 1, {"valid_loss": 0.25})
    assert_same(expected["model"], weights(fresh_model), "model")
    assert_same(expected["optimizer"], fresh_optimizer.state_dict(), "optimizer")
    train_steps(fresh_model, fresh_optimizer, fresh_scheduler, 5)
    assert_same(weights(model), weights(fresh_model), "model after 5 more steps")


def test_a_run_saved_with_boto3_resumes_through_the_connector(s3, run, monkeypatch: pytest.MonkeyPatch) -> None:
    uri, _ = run
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 3)
    with Checkpointer(uri, s3_backend="boto3") as ck:
        ck.save(3, model=model, optimizer=optimizer)
    fresh, fresh_optimizer, _ = make_run(seed=5)
    assert Checkpointer(uri).restore(model=fresh, optimizer=fresh_optimizer).step == 3
    assert_same(weights(model), weights(fresh), "model")


def test_async_save_keeps_the_values_of_the_moment_it_was_requested(run) -> None:
    uri, _ = run
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))  # 8 MB: several parts
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1024)).sum().backward()
    optimizer.step()
    before = {"model": weights(model), "optimizer": copy.deepcopy(optimizer.state_dict())}
    with Checkpointer(uri, async_save=True) as ck:
        ck.save(1, model=model, optimizer=optimizer)
        model(torch.randn(4, 1024)).sum().backward()
        optimizer.step()  # the next step, in place, while the upload is in flight

    fresh = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    Checkpointer(uri).restore(model=fresh, optimizer=fresh_optimizer)
    assert_same(before["model"], weights(fresh), "model")
    assert_same(before["optimizer"], fresh_optimizer.state_dict(), "optimizer")


def test_retention_and_a_damaged_newest_checkpoint(s3, run, caplog: pytest.LogCaptureFixture) -> None:
    uri, bucket = run
    model = Net()
    with Checkpointer(uri, keep_last=2, keep_best=("valid_loss", "min")) as ck:
        for step, loss in {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.3}.items():
            with torch.no_grad():
                model.head.bias.fill_(step)
            ck.save(step, model=model, metrics={"valid_loss": loss})
    assert [(i.step, i.status) for i in Checkpointer(uri).list()] == [(2, "complete"), (3, "complete"), (4, "complete")]

    key = "run/checkpoints/step-000000004/model.safetensors"
    damaged = bytearray(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    damaged[-1] ^= 0xFF
    s3.client().put_object(Bucket=bucket, Key=key, Body=bytes(damaged))
    fresh = Net()
    assert Checkpointer(uri).restore(model=fresh).step == 3
    assert fresh.head.bias.item() == 3
    assert "sha256 does not match" in caplog.text


SAVER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from torchkeep import Checkpointer
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 2048), nn.Linear(2048, 2048))  # 33 MB a checkpoint
    with Checkpointer(sys.argv[1], keep_last=None) as ck:
        for step in range(1, 1000):
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.fill_(step)
            ck.save(step, model=model)
            print(step, flush=True)
""")


def test_a_process_killed_mid_save_leaves_nothing_that_is_loaded(s3, run, tmp_path: Path) -> None:
    uri, bucket = run
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    process = subprocess.Popen([sys.executable, str(script), uri], stdout=subprocess.PIPE, text=True)
    try:
        # once two saves were requested, kill the instant a checkpoint's files exist without its manifest
        assert process.stdout.readline() and process.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            keys = objects(s3, bucket)
            steps = {key.split("/")[2] for key in keys if "/step-" in key}
            if any(f"run/checkpoints/{step}/MANIFEST.json" not in keys for step in steps):
                break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    infos = Checkpointer(uri).list(verify=True)
    assert [i for i in infos if i.status == "corrupt"] == []
    complete = [i.step for i in infos if i.status == "complete"]
    assert complete, f"no checkpoint committed before the kill: {infos}"
    model = nn.Sequential(nn.Linear(2048, 2048), nn.Linear(2048, 2048))
    restored = Checkpointer(uri).restore(model=model)
    assert restored.step == max(complete)
    assert all(torch.all(p == restored.step) for p in model.parameters())  # that step's values, all of them
