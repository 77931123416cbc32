"""Checkpoints of jobs of several processes (torch.distributed.run, gloo on CPU; tests/checkpoint/dist_worker.py).

One FSDP2 job of 2 processes saves at steps 3 and 5 to a local directory, to `s3://` (moto on
127.0.0.1) and to a directory where rank 1 cannot write step 5; the tests then resume it with 1, 2
and 3 processes, read it from one plain process, and check that a DDP job writes today's format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from faultproxy import FaultProxy
from torchkeep import CheckpointError, Checkpointer
from torchkeep.checkpoint import format
from torchkeep.checkpoint.inspect import inspect
from torchkeep.checkpoint.shards import model_weights
from torchkeep.checkpoint.tensors import decode
from torchkeep.storage import open_storage
from torchkeep.training.transfer import read_pretrained

WORKER = Path(__file__).with_name("dist_worker.py")
SHARDS_OF_TWO = ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"]


def launch(nproc: int, *args: object) -> None:
    """`python -m torch.distributed.run --nproc_per_node N dist_worker.py --out OUT ARGS`, one thread a process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(WORKER), *map(str, args)]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=180)
    out = Path(str(args[args.index("--out") + 1]))
    assert done.returncode == 0, f"{sorted(p.name for p in out.iterdir())}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_equal(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    different = [k for k in expected if not torch.equal(expected[k], actual[k])]
    assert not different, different


class Job:
    """The 2-process FSDP job: where it saved, and the gathered states it wrote (step-3, step-5, final)."""

    def __init__(self, root: Path, s3) -> None:
        self.local, self.s3, self.blocked, self.out = root / "local", f"s3://{s3.new_bucket()}/run", root / "blocked", root / "out"
        self.out.mkdir()
        # Rank 1 cannot write its shard of step 5 there: a directory stands where its file would go.
        (self.blocked / "checkpoints" / "step-000000005" / SHARDS_OF_TWO[1]).mkdir(parents=True)
        # Rank 1 reaches this bucket through a proxy that cuts every connection after 10 kB sent (its
        # shard is 30 kB); rank 0 reaches it directly.
        self.cut_bucket = s3.new_bucket()
        proxy = FaultProxy(("127.0.0.1", int(s3.url.rsplit(":", 1)[1]))).start()
        proxy.cut_after_bytes = 10_000
        self.plain = root / "plain"  # then, as DDP: plain/job from 2 processes, plain/single from rank 0 alone
        try:
            launch(2, "--out", self.out, "--uri", self.local, "--uri", self.s3, "--uri", self.blocked,
                   "--uri", f"s3://{self.cut_bucket}/run", "--rank-1-endpoint", proxy.url,
                   "--steps", 5, "--save-at", "3,5", "--plain-copy", self.plain)
        finally:
            proxy.close()
        self.proxy_cuts = proxy.cuts

    def state(self, name: str) -> dict[str, torch.Tensor]:
        return load(self.out / f"{name}.pt")


@pytest.fixture(scope="module")
def job(tmp_path_factory, s3) -> Job:
    return Job(tmp_path_factory.mktemp("fsdp"), s3)


def resumed(job: Job, tmp_path: Path, nproc: int, uri: object, *more: object) -> Path:
    """Resume the job from its step 3 with `nproc` processes, train to step 5; the worker's out dir."""
    launch(nproc, "--out", tmp_path, "--uri", uri, "--resume", "--from-step", 3, "--steps", 5, *more)
    return tmp_path


def test_two_fsdp_processes_write_a_shard_each_and_rank_0_commits_them_with_the_manifest(job: Job) -> None:
    for uri in (str(job.local), job.s3):
        storage = open_storage(uri)
        assert storage.read("checkpoints/LATEST") == b"step-000000005"
        manifest = json.loads(storage.read("checkpoints/step-000000003/MANIFEST.json"))
        assert (manifest["layout"], manifest["world_size"], manifest["step"]) == ("sharded", 2, 3)
        assert sorted(manifest["files"]) == sorted([*SHARDS_OF_TWO, "shards.json", "state.json", "state.safetensors"])
        assert sorted(key.rsplit("/", 1)[1] for key in storage.list("checkpoints/step-000000003")) == sorted(
            [*manifest["files"], "MANIFEST.json"])
        assert [(i.step, i.status) for i in Checkpointer(uri).list(verify=True)] == [(3, "complete"), (5, "complete")]
        layout = json.loads(storage.read("checkpoints/step-000000003/shards.json"))["tensors"]
        # FSDP2 shards dim 0: each rank wrote half of every weight; the 1-value bias fell to rank 0 alone
        assert [c["file"] for c in layout["model.2.weight"]["chunks"]] == SHARDS_OF_TWO
        assert layout["model.2.weight"]["size"] == [64, 64] and layout["model.4.bias"]["size"] == [1]


def test_a_write_failing_on_one_rank_fails_the_save_on_every_rank_and_the_previous_checkpoint_stays(job: Job, torchkeep) -> None:
    errors = {rank: (job.out / f"error-2-rank-{rank}.txt").read_text() for rank in (0, 1)}
    for rank, error in errors.items():
        assert error.startswith("CheckpointError: ") and "step-000000005: not saved" in error, (rank, error)
        assert "rank 1: " in error and "write failed" in error and "rank 0: " not in error  # rank 1's disk, told to both
    assert not (job.out / "error-0-rank-0.txt").exists() and not (job.out / "error-1-rank-1.txt").exists()
    storage = open_storage(str(job.blocked))
    assert storage.read("checkpoints/LATEST") == b"step-000000003"
    assert not (job.blocked / "checkpoints" / "step-000000005").exists()  # rank 0 removed what was written
    listing = torchkeep("checkpoints", job.blocked, "--json", cwd=job.blocked)
    assert listing.returncode == 0, listing.stderr
    assert [(c["step"], c["status"]) for c in json.loads(listing.stdout)] == [(3, "complete")]


def test_an_s3_upload_cut_on_one_rank_fails_the_save_on_every_rank_and_leaves_no_object(job: Job, s3) -> None:
    assert job.proxy_cuts >= 2  # rank 1's upload, and its retry
    for rank in (0, 1):
        error = (job.out / f"error-3-rank-{rank}.txt").read_text()  # the last failed save: step 5
        assert error.startswith("CheckpointError: ") and "step-000000005: not saved" in error, (rank, error)
        assert "rank 1: " in error and "rank 0: " not in error
    # Both saves failed on every rank: rank 0 removed its own files; no manifest, no LATEST was written
    assert s3.client().list_objects_v2(Bucket=job.cut_bucket).get("KeyCount") == 0


def test_resume_with_one_process_restores_what_two_saved_and_trains_on_within_float_tolerance(job: Job, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(job.local, run)
    out = resumed(job, tmp_path, 1, run, "--save-at", "4,5")
    assert_equal(job.state("step-3"), load(out / "restored.pt"))  # weights, exp_avg, exp_avg_sq, step: exact
    # Another world size sums the gradients in another order (and draws other noise, 1e-6): close, not equal
    final, expected = load(out / "final.pt"), job.state("final")
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    # Its saves are sharded over 1 process; retention (keep_last=2) dropped step 3, and the abandoned
    # step 5 of the 2-process history went when step 4 was committed
    assert [(i.step, i.status) for i in Checkpointer(str(run)).list(verify=True)] == [(4, "complete"), (5, "complete")]
    assert sorted(p.name for p in (run / "checkpoints" / "step-000000005").iterdir()) == [
        "MANIFEST.json", "shard-00000-of-00001.safetensors", "shards.json", "state.json", "state.safetensors"]


def test_resume_with_three_processes_from_s3_reshards_and_trains_on_within_float_tolerance(job: Job, tmp_path: Path) -> None:
    out = resumed(job, tmp_path, 3, job.s3, "--restore-plain", job.plain / "job")
    assert_equal(job.state("step-3"), load(out / "restored.pt"))
    final, expected = load(out / "final.pt"), job.state("final")
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)


    # and the 3 sharded processes also loaded the plain checkpoint of 2 DDP processes (positions -> names)
    plain = job.plain / "job" / "checkpoints" / "step-000000006"
    weights = decode((plain / "model.safetensors").read_bytes(), "model")
    state = decode((plain / "state.safetensors").read_bytes(), "state")
    names = [name for name, _ in toy()[0].named_parameters()]
    expected = {f"model.{k}": v for k, v in weights.items()}
    expected.update({f"optimizer.{names[int(k.split('.')[2])]}.{k.split('.')[3]}": v for k, v in state.items()
                     if k.startswith("optimizer.state.")})
    assert_equal(expected, load(out / "from-plain.pt"))


def test_resume_with_the_same_two_processes_is_bit_identical_every_rank_rng_included(job: Job, tmp_path: Path) -> None:
    out = resumed(job, tmp_path, 2, job.local)
    assert_equal(job.state("step-3"), load(out / "restored.pt"))
    assert_equal(job.state("final"), load(out / "final.pt"))


def test_ddp_job_saves_todays_format_from_rank_0_identical_to_one_process(job: Job) -> None:
    job, single = job.plain / "job" / "checkpoints" / "step-000000006", job.plain / "single" / "checkpoints" / "step-000000006"
    files = ["MANIFEST.json", "model.safetensors", "state.json", "state.safetensors"]
    assert sorted(p.name for p in job.iterdir()) == sorted(p.name for p in single.iterdir()) == files
    manifest = json.loads((job / "MANIFEST.json").read_text())
    assert "layout" not in manifest and "world_size" not in manifest
    assert (job / "model.safetensors").read_bytes() == (single / "model.safetensors").read_bytes()
    # The job also keeps every rank's RNG state (rank 0's is `rng`, as one process keeps it)
    job_state, single_state = json.loads((job / "state.json").read_text()), json.loads((single / "state.json").read_text())
    assert len(job_state.pop("rng_by_rank")) == 2
    assert job_state == single_state
    job_tensors, single_tensors = decode((job / "state.safetensors").read_bytes(), "job"), decode((single / "state.safetensors").read_bytes(), "single")
    assert sorted(k for k in job_tensors if not k.startswith("rng_by_rank.")) == sorted(single_tensors)
    assert all(torch.equal(job_tensors[k], single_tensors[k]) for k in single_tensors)
    assert torch.equal(job_tensors["rng_by_rank.0.torch"], single_tensors["rng.torch"])
    assert not torch.equal(job_tensors["rng_by_rank.1.torch"], single_tensors["rng.torch"])


def toy() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """dist_worker.py's model, whole, in this one process (no process group)."""
    model = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def test_one_plain_process_reads_a_sharded_checkpoint_through_the_public_paths(job: Job, tmp_path: Path, torchkeep) -> None:
    expected = job.state("step-3")
    model, optimizer, scheduler = toy()
    restored = Checkpointer(job.s3).restore(model=model, optimizer=optimizer, scheduler=scheduler, step=3)
    assert (restored.step, restored.epoch) == (3, 0)
    assert_equal({k: v for k, v in expected.items() if k.startswith("model.")},
                 {f"model.{k}": v for k, v in model.state_dict().items()})
    names = [name for name, _ in model.named_parameters()]
    optimizer_state = {f"optimizer.{names[index]}.{key}": value for index, values in optimizer.state_dict()["state"].items()
                       for key, value in values.items()}
    assert_equal({k: v for k, v in expected.items() if k.startswith("optimizer.")}, optimizer_state)
    assert scheduler.state_dict()["last_epoch"] == 3 and optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)

    # The weights alone, as predict / evaluate / serve load an unfinished run and fit() its best step
    alone = toy()[0]
    torch.manual_seed(7)
    assert Checkpointer(str(job.local)).restore(model=alone, step=3, restore_rng=False).step == 3
    assert torch.equal(alone.state_dict()["2.weight"], expected["model.2.weight"])
    drawn = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(1))  # restore_rng=False left this process's RNG alone

    # Whole weights without a model: what inspect, transfer learning and verify-resume read
    files = format.read_checkpoint(open_storage(str(job.local)), "step-000000003")[1]
    assert_equal({k.removeprefix("model."): v for k, v in expected.items() if k.startswith("model.")},
                 model_weights(files, "step-3"))
    run = tmp_path / "run"  # as a run of torchkeep's, `--init-from` takes its newest checkpoint's weights
    shutil.copytree(job.local, run)
    (run / "config.json").write_text("{}")
    pretrained = read_pretrained(str(run))
    assert pretrained.kind == "checkpoint step-000000005"
    assert_equal({k.removeprefix("model."): v for k, v in job.state("step-5").items() if k.startswith("model.")},
                 pretrained.weights)
    report = inspect(str(job.local / "checkpoints" / "step-000000003"))
    assert report["valid"] and report["metadata"]["layout"] == "sharded" and report["metadata"]["world_size"] == 2
    assert report["parameter_count"] == sum(p.numel() for p in model.parameters())
    shown = torchkeep("inspect", job.local / "checkpoints" / "step-000000003", cwd=job.local)
    assert shown.returncode == 0 and "valid (every file matches the manifest)" in shown.stdout
    assert "model.2.weight" in shown.stdout and "[64, 64]" in shown.stdout


def test_a_damaged_shard_is_never_loaded(job: Job, tmp_path: Path, torchkeep) -> None:
    run = tmp_path / "run"
    shutil.copytree(job.local, run)
    shard = run / "checkpoints" / "step-000000005" / SHARDS_OF_TWO[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="shard-00001-of-00002.safetensors: sha256 does not match the manifest"):
        Checkpointer(str(run)).restore(model=toy()[0], step=5)
    listing = torchkeep("checkpoints", run, "--verify", "--json", cwd=run)
    assert [(c["step"], c["status"]) for c in json.loads(listing.stdout)] == [(3, "complete"), (5, "corrupt")]
