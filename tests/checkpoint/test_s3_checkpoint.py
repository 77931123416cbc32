"""Checkpointer on S3 (moto's server on 127.0.0.1, over HTTP): round trips, retention, damaged and
planted objects, and a connection cut in the middle of a multipart upload.

Damage is done the way it happens: another client (boto3, or plain file writes on local disk)
overwrites or deletes objects behind the Checkpointer's back.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_safetensors
from torch import nn

from faultproxy import FaultProxy
from torchkeep import CheckpointError, Checkpointer, StorageError, TorchkeepError
from torchkeep.storage.s3 import S3Storage

MiB = 1 << 20


from small_run import Net, assert_same, make_run, train_steps, weights  # noqa: E402


class Place:
    """Where a run lives, reached without torchkeep: plain files, or boto3 on the bucket."""

    def __init__(self, uri: str, root: Path | None = None, client: Any = None, bucket: str = "") -> None:
        self.uri, self.root, self.client, self.bucket = uri, root, client, bucket

    def put(self, key: str, data: bytes) -> None:
        if self.root is not None:
            (self.root / key).write_bytes(data)
        else:
            self.client.put_object(Bucket=self.bucket, Key=f"run/{key}", Body=data)

    def get(self, key: str) -> bytes:
        if self.root is not None:
            return (self.root / key).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=f"run/{key}")["Body"].read()

    def delete(self, key: str) -> None:
        if self.root is not None:
            (self.root / key).unlink()
        else:
            self.client.delete_object(Bucket=self.bucket, Key=f"run/{key}")

    def keys(self, prefix: str = "") -> list[str]:
        if self.root is not None:
            base = self.root / prefix
            return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"run/{prefix}")
        return sorted(item["Key"].removeprefix("run/") for page in pages for item in page.get("Contents", []))

    def steps(self) -> list[int]:
        """Every step with any object left under checkpoints/, committed or not."""
        return sorted({int(key.split("/")[1].removeprefix("step-")) for key in self.keys("checkpoints/")
                       if key.split("/")[1].startswith("step-")})


def s3_place(s3) -> Place:
    bucket = s3.new_bucket()
    return Place(f"s3://{bucket}/run", client=s3.client(), bucket=bucket)


@pytest.fixture
def run(s3) -> Place:
    """A fresh run prefix in a fresh bucket."""
    return s3_place(s3)


def key(step: int, file_name: str) -> str:
    return f"checkpoints/step-{step:09d}/{file_name}"


def save_steps(uri: str, steps: list[int], **options: Any) -> dict[int, dict[str, torch.Tensor]]:
    """Train a little between saves; return the weights each checkpoint holds."""
    model, optimizer, scheduler = make_run()
    saved = {}
    with Checkpointer(uri, **options) as ck:
        for step in steps:
            train_steps(model, optimizer, scheduler, 1)
            ck.save(step, model=model, optimizer=optimizer, metrics={"valid_loss": float(step)})
            saved[step] = weights(model)
    return saved


# -- round trip ----------------------------------------------------------------------------------


def test_save_then_restore_on_s3_is_bit_identical_and_training_continues_the_same(run: Place) -> None:
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 5)
    expected = {"model": weights(model), "optimizer": copy.deepcopy(optimizer.state_dict()),
                "scheduler": copy.deepcopy(scheduler.state_dict())}
    with Checkpointer(run.uri) as ck:
        ck.save(5, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1,
                metrics={"valid_loss": 0.25}, extra={"note": "own loop"})
    train_steps(model, optimizer, scheduler, 5)  # the uninterrupted run goes on

    assert run.keys("checkpoints/") == ["checkpoints/LATEST"] + [
        key(5, name) for name in ("MANIFEST.json", "model.safetensors", "state.json", "state.safetensors")
    ]
    assert run.get("checkpoints/LATEST") == b"step-000000005"
    on_s3 = load_safetensors(run.get(key(5, "model.safetensors")))  # the safetensors library reads it
    assert_same(expected["model"], on_s3, "model.safetensors read with boto3")

    fresh_model, fresh_optimizer, fresh_scheduler = make_run(seed=99)
    torch.manual_seed(12345)
    restored = Checkpointer(run.uri).restore(model=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler)
    assert (restored.step, restored.epoch, restored.metrics, restored.extra) == (5, 1, {"valid_loss": 0.25},
                                                                                 {"note": "own loop"})
    assert_same(expected["model"], weights(fresh_model), "model")
    assert_same(expected["optimizer"], fresh_optimizer.state_dict(), "optimizer")
    assert_same(expected["scheduler"], fresh_scheduler.state_dict(), "scheduler")

    train_steps(fresh_model, fresh_optimizer, fresh_scheduler, 5)
    assert_same(weights(model), weights(fresh_model), "model after 5 more steps")


def test_async_save_on_s3_keeps_the_values_of_the_moment_it_was_requested(run: Place) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 512)).sum().backward()
    optimizer.step()
    before = {"model": weights(model), "optimizer": copy.deepcopy(optimizer.state_dict())}

    with Checkpointer(run.uri, async_save=True) as ck:
        ck.save(1, model=model, optimizer=optimizer)
        with torch.no_grad():  # the next step, in place, while the upload may be in flight
            for parameter in model.parameters():
                parameter.add_(1)
            for state in optimizer.state.values():
                state["exp_avg"].add_(1)

    fresh = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    Checkpointer(run.uri).restore(model=fresh, optimizer=fresh_optimizer)
    assert_same(before["model"], weights(fresh), "model")
    assert_same(before["optimizer"], fresh_optimizer.state_dict(), "optimizer")


# -- retention -----------------------------------------------------------------------------------


def test_keep_last_and_keep_best_on_s3_delete_only_superseded_checkpoints(run: Place) -> None:
    # what a crashed earlier process left: files of a checkpoint whose manifest never landed
    run.put(key(0, "model.safetensors"), b"\x00" * 100)
    model = Net()
    losses = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.3, 5: 0.8, 6: 0.7}
    with Checkpointer(run.uri, keep_last=2, keep_best=("valid_loss", "min")) as ck:
        for step, loss in losses.items():
            ck.save(step, model=model, metrics={"valid_loss": loss})
            ck.wait()
            if step == 1:
                assert run.steps() == [1]  # the leftover went with the first commit

    assert run.steps() == [2, 5, 6]  # the best (0.2) and the last two; nothing left of the others
    assert run.keys("checkpoints/") == ["checkpoints/LATEST"] + sorted(
        key(step, name) for step in (2, 5, 6)
        for name in ("MANIFEST.json", "model.safetensors", "state.json", "state.safetensors"))
    infos = Checkpointer(run.uri).list(verify=True)
    assert [(i.step, i.status) for i in infos] == [(2, "complete"), (5, "complete"), (6, "complete")]
    assert Checkpointer(run.uri).restore(model=Net(), step=2).metrics == {"valid_loss": 0.2}


def test_retention_keeps_the_checkpoint_a_run_resumed_from_until_a_newer_one_is_committed(run: Place) -> None:
    saved = save_steps(run.uri, [10, 20], keep_last=1)
    assert run.steps() == [20]
    model = Net()
    ck = Checkpointer(run.uri, keep_last=1, async_save=False)
    assert ck.restore(model=model).step == 20
    assert run.steps() == [20]
    ck.save(21, model=model)
    assert run.steps() == [21]
    fresh = Net()
    Checkpointer(run.uri).restore(model=fresh)
    assert_same(saved[20], weights(fresh))  # 21 was saved from the restored weights


# -- damaged objects -----------------------------------------------------------------------------


def test_altered_bytes_of_an_s3_object_are_detected_and_restore_falls_back(
    run: Place, caplog: pytest.LogCaptureFixture
) -> None:
    saved = save_steps(run.uri, [10, 20], keep_last=3)
    original = run.get(key(20, "model.safetensors"))
    altered = bytearray(original)
    altered[len(altered) // 2] ^= 0xFF
    run.put(key(20, "model.safetensors"), bytes(altered))  # same size, different bytes
    assert len(run.get(key(20, "model.safetensors"))) == len(original)

    infos = {i.step: i for i in Checkpointer(run.uri).list(verify=True)}
    assert infos[10].status == "complete"
    assert infos[20].status == "corrupt" and "sha256 does not match" in infos[20].reason
    model = Net()
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        assert Checkpointer(run.uri).restore(model=model).step == 10
    assert_same(saved[10], weights(model))
    warnings = [r.getMessage() for r in caplog.records if r.name == "torchkeep"]
    assert len(warnings) == 1 and "step-000000020/model.safetensors" in warnings[0] and "sha256" in warnings[0]
    with pytest.raises(CheckpointError, match=r"step-000000020/model\.safetensors: sha256 does not match"):
        Checkpointer(run.uri).restore(model=Net(), step=20)


def test_a_manifest_that_lists_a_missing_object_is_refused(run: Place, caplog: pytest.LogCaptureFixture) -> None:
    saved = save_steps(run.uri, [10, 20], keep_last=3)
    run.delete(key(20, "state.safetensors"))

    model = Net()
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        assert Checkpointer(run.uri).restore(model=model).step == 10
    assert_same(saved[10], weights(model))
    assert any("step-000000020/state.safetensors" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointError, match=r"step-000000020/state\.safetensors: listed in the manifest but unreadable"
                                              r" \(.*no such object\)"):
        Checkpointer(run.uri).restore(model=Net(), step=20)


def test_cli_checkpoints_verify_shows_each_s3_checkpoint_validity(run: Place, torchkeep, tmp_path: Path) -> None:
    save_steps(run.uri, [10, 20, 30, 40], keep_last=None)
    run.put(key(20, "model.safetensors"), b"\x00" * len(run.get(key(20, "model.safetensors"))))
    run.delete(key(30, "state.json"))
    run.delete(key(40, "MANIFEST.json"))

    result = torchkeep("checkpoints", run.uri, "--verify", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    statuses = {info["step"]: info["status"] for info in json.loads(result.stdout)}
    assert statuses == {10: "complete", 20: "corrupt", 30: "corrupt", 40: "incomplete"}


class Planted:
    """What an attacker with write access puts in a checkpoint: unpickling it runs code (here, creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("backend", ["local", "s3"])
@pytest.mark.parametrize("file_name", ["model.safetensors", "state.safetensors"])
def test_a_planted_pickle_with_a_matching_manifest_is_refused_and_never_run(
    s3, tmp_path: Path, backend: str, file_name: str
) -> None:
    place = Place(str(tmp_path / "run"), root=tmp_path / "run") if backend == "local" else s3_place(s3)
    with Checkpointer(place.uri, async_save=False) as ck:
        ck.save(1, model=Net(), optimizer=torch.optim.AdamW(Net().parameters()))
    marker = tmp_path / "planted-code-ran"
    payload = pickle.dumps(Planted(marker))
    place.put(key(1, file_name), payload)
    manifest = json.loads(place.get(key(1, "MANIFEST.json")))
    manifest["files"][file_name] = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    place.put(key(1, "MANIFEST.json"), json.dumps(manifest).encode())
    # every size and hash matches: only the format itself can refuse it
    assert [(i.step, i.status) for i in Checkpointer(place.uri).list(verify=True)] == [(1, "complete")]

    model = Net()
    before = weights(model)
    for step in (None, 1):
        with pytest.raises(CheckpointError, match=f"step-000000001/{file_name}: not a valid safetensors file"):
            Checkpointer(place.uri).restore(model=model, step=step)
    assert not marker.exists()
    assert_same(before, weights(model))

    proof = tmp_path / "the-payload-is-live"  # unpickled, the same bytes would have run
    pickle.loads(pickle.dumps(Planted(proof))).close()
    assert proof.exists()


# -- a connection cut in the middle of a multipart upload ----------------------------------------


@pytest.fixture
def proxy(s3):
    host, port = s3.url.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port))).start()
    yield proxy
    proxy.close()


def through(proxy: FaultProxy, s3, run: Place) -> S3Storage:
    """The run's storage with 5 MiB parts, on a client that talks to S3 through the proxy (2 attempts)."""
    return S3Storage(run.uri, part_size=5 * MiB, client=s3.client(endpoint_url=proxy.url, max_attempts=2))


def set_cut(proxy: FaultProxy, storage: S3Storage, cut_after_bytes: int | None) -> None:
    proxy.cut_after_bytes = cut_after_bytes
    storage.client.close()  # idle pooled connections were opened under the old setting: reconnect


def big_model(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(2000, 2000)  # 16 MB of weights: four parts


def assert_nothing_of(run: Place, step: int) -> None:
    """No object of `step`, and no unfinished multipart upload left behind (it was aborted)."""
    assert not [k for k in run.keys("checkpoints/") if f"step-{step:09d}" in k]
    assert run.client.list_multipart_uploads(Bucket=run.bucket).get("Uploads", []) == []


def test_a_cut_connection_mid_upload_leaves_the_previous_checkpoint_and_the_next_save_succeeds(
    s3, run: Place, proxy: FaultProxy
) -> None:
    storage = through(proxy, s3, run)
    model = big_model(0)
    ck = Checkpointer(storage, keep_last=1, async_save=False)
    ck.save(1, model=model)
    step_1 = weights(model)

    set_cut(proxy, storage, 1_000_000)  # every connection dies ~1 MB into its body
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises((StorageError, CheckpointError), match="step-000000002/model.safetensors"):
        ck.save(2, model=model)
    assert proxy.cuts >= 2  # the part and its retry

    assert_nothing_of(run, 2)
    assert [(i.step, i.status) for i in Checkpointer(run.uri).list(verify=True)] == [(1, "complete")]
    fresh = nn.Linear(2000, 2000)
    assert Checkpointer(run.uri).restore(model=fresh).step == 1
    assert_same(step_1, weights(fresh), "step 1 after the failed save")

    set_cut(proxy, storage, None)
    ck.save(3, model=model)
    assert [(i.step, i.status) for i in Checkpointer(run.uri).list(verify=True)] == [(3, "complete")]
    assert Checkpointer(run.uri).restore(model=fresh).step == 3
    assert_same(weights(model), weights(fresh), "step 3")


def test_a_cut_connection_during_an_async_save_is_raised_by_the_next_save_and_by_wait(
    s3, run: Place, proxy: FaultProxy
) -> None:
    storage = through(proxy, s3, run)
    model = big_model(1)
    ck = Checkpointer(storage, keep_last=1, async_save=True)
    ck.save(1, model=model)
    ck.wait()
    step_1 = weights(model)

    set_cut(proxy, storage, 1_000_000)
    ck.save(2, model=model)  # returns at once; the upload fails in the background
    with pytest.raises(TorchkeepError, match="step-000000002/model.safetensors"):
        ck.save(3, model=model)  # the training loop hears of it at its next save
    ck.save(4, model=model)
    with pytest.raises(TorchkeepError, match="step-000000004/model.safetensors"):
        ck.wait()
    for step in (2, 3, 4):
        assert_nothing_of(run, step)
    fresh = nn.Linear(2000, 2000)
    assert Checkpointer(run.uri).restore(model=fresh).step == 1
    assert_same(step_1, weights(fresh), "step 1 after the failed saves")

    set_cut(proxy, storage, None)
    with torch.no_grad():
        model.weight.mul_(2)
    ck.save(5, model=model)
    ck.close()
    assert [(i.step, i.status) for i in Checkpointer(run.uri).list(verify=True)] == [(5, "complete")]
    assert Checkpointer(run.uri).restore(model=fresh).step == 5
    assert_same(weights(model), weights(fresh), "step 5")
