"""The kill campaign: `torchkeep train` killed with SIGKILL at 20 random moments, resumed each time.

Ten kills of a run on local disk, ten of a run on S3 (moto's server on 127.0.0.1). A seeded RNG
picks each moment among four kinds:

- startup:    while the process imports, reads the data and builds the model;
- training:   mid-epoch, a few milliseconds after its newest checkpoint passes a random step ahead;
- checkpoint: the instant a checkpoint is seen being written (files without a manifest yet) or
              being deleted by retention (manifest gone, files still there);
- end:        right after the last epoch ends, while the final checkpoint and the bundle are written.

After each kill the next attempt is `train --resume RUN`; it must never fail, and no checkpoint may
ever be corrupt (an interrupted one is incomplete: no manifest). After the tenth kill the run is
resumed to completion and its bundle must hold the weights of an uninterrupted run of the same
command, bit for bit (one reference run on local disk serves both campaigns: where the run
directory lives does not change the math).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file

from kill_table import TRAIN_FLAGS, write_table
from torchkeep import Checkpointer, StorageError
from torchkeep.storage import Storage, open_storage

STEPS = 86  # 2 epochs of 43 batches: 5,400 training rows (6,000 less 10% for validation) in batches of 128

KILLS = 10
MAX_ATTEMPTS = 16


class Attempt:
    """A running `torchkeep train`, its stderr read line by line as it comes."""

    def __init__(self, args: list[object], cwd: Path, env: dict[str, str]) -> None:
        self.spawned = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "torchkeep", "train", *map(str, args)], cwd=cwd, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.training = threading.Event()  # "training ... -> RUN": set-up done, fit() begins
        self.last_epoch_done = threading.Event()  # "epoch 2/2 ...": the final save and the bundle come next
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append((time.monotonic() - self.spawned, line))
            if line.startswith("training "):
                self.training.set()
            elif line.startswith("epoch 2/2"):
                self.last_epoch_done.set()

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, event: threading.Event, timeout_s: float = 60) -> bool:
        """True once `event` happened while the process still runs."""
        deadline = time.monotonic() + timeout_s
        while not event.wait(0.005):
            if not self.running() or time.monotonic() > deadline:
                return False
        return self.running()

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.running() and time.monotonic() < deadline:
            time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))

    def kill(self) -> bool:
        """SIGKILL now; False when the process had already ended on its own."""
        if self.running():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        return self.process.returncode == -signal.SIGKILL

    def finish(self, timeout_s: float = 120) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            if self.running():
                self.process.kill()

    def stderr(self) -> str:
        self._reader.join(timeout=30)
        return "".join(line for _, line in self.lines)

    def seconds_at(self, prefix: str) -> float:
        return next(t for t, line in self.lines if line.startswith(prefix))


@dataclass
class Reference:
    data: Path
    weights: dict[str, torch.Tensor]
    startup_s: float  # spawn -> "training" line


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted run: the weights every campaign must end with, and how long each phase takes."""
    directory = tmp_path_factory.mktemp("reference")
    write_table(directory / "flights.csv")
    attempt = Attempt(["--data", directory / "flights.csv", "--run-dir", directory / "run", *TRAIN_FLAGS],
                      cwd=directory, env=train_env())
    assert attempt.finish() == 0, attempt.stderr()
    attempt.stderr()
    return Reference(data=directory / "flights.csv", weights=load_file(directory / "run" / "bundle" / "model.safetensors"),
                     startup_s=attempt.seconds_at("training "))


def train_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # one thread: fast for tiny models, the same math in every process
    return {**os.environ, "OMP_NUM_THREADS": "1", **(extra or {})}


def committed_step(run_dir: str) -> int:
    """The step a resume starts from: the newest complete checkpoint (0 when there is none)."""
    complete = [i.step for i in Checkpointer(run_dir).list() if i.status == "complete"]
    return max(complete, default=0)


def checkpoint_activity(run_dir: str) -> Callable[[], str | None]:
    """A probe that names the checkpoint being written or deleted right now (seen by listing the store)."""
    storage = open_storage(run_dir)

    def by_step() -> dict[str, set[str]]:
        steps: dict[str, set[str]] = {}
        try:
            keys = storage.list("checkpoints")
        except OSError:  # a listing racing a delete (tests/storage/test_local.py): look again
            return by_step()
        for key in keys:
            parts = key.split("/")
            if len(parts) == 3 and parts[1].startswith("step-"):
                steps.setdefault(parts[1], set()).add(parts[2])
        return steps

    first = by_step()
    stale = {name for name, files in first.items() if "MANIFEST.json" not in files}  # left by an earlier kill
    committed = {name for name, files in first.items() if "MANIFEST.json" in files}

    def active() -> str | None:
        nonlocal committed
        now = by_step()
        deleting = [name for name in committed if name in now and "MANIFEST.json" not in now[name]]
        writing = [name for name, files in now.items()
                   if "MANIFEST.json" not in files and name not in stale and name not in deleting]
        committed = {name for name, files in now.items() if "MANIFEST.json" in files}
        if deleting:
            return f"retention deleting {deleting[0]}"
        return f"writing {writing[0]}" if writing else None

    return active


def latest_step(storage: Storage) -> int:
    try:
        return int(bytes(storage.read("checkpoints/LATEST")).decode().removeprefix("step-"))
    except (StorageError, ValueError):
        return 0


def kill_at_a_random_moment(attempt: Attempt, kind: str, rng: random.Random, reference: Reference,
                            run_dir: str, committed: int) -> str:
    """Wait for the moment `kind` picks (see the module docstring); describe it. The caller kills."""
    if kind == "startup":  # a random moment of the start-up, at the latest when training begins
        attempt.wait_for(attempt.training, timeout_s=rng.uniform(0.1, 1.0) * reference.startup_s)
        return f"startup +{time.monotonic() - attempt.spawned:.2f}s"
    if not attempt.wait_for(attempt.training):
        return f"{kind}: ended before training"
    if kind == "training" and committed < STEPS - 10:
        storage = open_storage(run_dir)
        target = min(committed + rng.randint(5, 25), STEPS - 6)
        deadline = time.monotonic() + 60
        while attempt.running() and latest_step(storage) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        delay = rng.uniform(0.0, 0.03)  # a few steps on: between checkpoints, or while one is written
        attempt.sleep(delay)
        return f"training past step {target} +{delay:.3f}s"
    if kind == "checkpoint" and committed < STEPS:
        active = checkpoint_activity(run_dir)
        deadline = time.monotonic() + 60
        while attempt.running() and time.monotonic() < deadline:
            if seen := active():
                return f"checkpoint: {seen}"
        return "checkpoint (none seen)"
    if committed < STEPS and attempt.wait_for(attempt.last_epoch_done):
        delay = rng.uniform(0.0, 0.02)
        attempt.sleep(delay)
        return f"end of the last epoch +{delay:.3f}s"
    delay = rng.uniform(0.0, 0.3)  # nothing left to train: fit() returns, the bundle is written
    attempt.sleep(delay)
    return f"{kind} with nothing left to train +{delay:.3f}s"


def resumed_from(errors: str) -> int | None:
    match = re.search(r"resumed from step-(\d+)", errors)
    return int(match.group(1)) if match else None


@dataclass
class Campaign:
    kills: list[str] = field(default_factory=list)
    finished_early: int = 0
    starts: list[int] = field(default_factory=list)  # where each resumed attempt said it continued from
    interrupted_writes: int = 0  # kills that left a new incomplete checkpoint behind


def run_campaign(run_dir: str, cwd: Path, env: dict[str, str], reference: Reference, seed: int) -> Campaign:
    rng = random.Random(seed)
    middle = ["startup", "startup", "training", "training", "checkpoint", "checkpoint", "checkpoint"]
    rng.shuffle(middle)
    # the first attempt is killed once it trains (a kill before it has written its run directory leaves
    # nothing to resume: see the test below); the last two land at the very end
    kinds = ["training", *middle, "end", "end"]
    campaign = Campaign()
    attempts = 0
    complete = False
    incomplete: set[str] = set()
    while len(campaign.kills) < KILLS:
        assert attempts < MAX_ATTEMPTS, f"only {len(campaign.kills)} kills in {attempts} attempts: {campaign}"
        attempts += 1
        fresh = attempts == 1
        args = ["--data", reference.data, "--run-dir", run_dir, *TRAIN_FLAGS] if fresh else ["--resume", run_dir]
        committed = 0 if fresh else committed_step(run_dir)
        kind = "startup" if complete else kinds[len(campaign.kills)]  # nothing left to train: kill it starting up
        attempt = Attempt(args, cwd=cwd, env=env)
        try:
            moment = kill_at_a_random_moment(attempt, kind, rng, reference, run_dir, committed)
            killed = attempt.kill()
        finally:
            attempt.finish()
        errors = attempt.stderr()
        assert "error:" not in errors and "Traceback" not in errors, f"attempt {attempts} ({kind}) failed: {errors}"
        if not fresh and (start := resumed_from(errors)) is not None:
            campaign.starts.append(start)
        if killed:
            campaign.kills.append(moment)
        else:
            assert attempt.process.returncode == 0, errors
            campaign.finished_early += 1
            complete = True
        infos = Checkpointer(run_dir).list(verify=True)
        corrupt = [i for i in infos if i.status == "corrupt"]
        assert corrupt == [], f"after a kill at '{moment}': {corrupt}"
        left = {i.name for i in infos if i.status == "incomplete"}
        campaign.interrupted_writes += bool(killed and left - incomplete)
        incomplete = left
    return campaign


def finish_and_check(campaign: Campaign, run_dir: str, cwd: Path, env: dict[str, str],
                     bundle: Callable[[], dict[str, torch.Tensor]], reference: Reference) -> None:
    last = Attempt(["--resume", run_dir], cwd=cwd, env=env)
    assert last.finish() == 0, last.stderr()
    start = resumed_from(last.stderr())
    assert start is not None, last.stderr()
    campaign.starts.append(start)
    print(f"\n{run_dir}: kills at {campaign.kills}; finished before the kill: {campaign.finished_early};"
          f" kills that left an incomplete checkpoint: {campaign.interrupted_writes}; resumed from {campaign.starts}")

    assert len(campaign.kills) == KILLS
    assert campaign.starts == sorted(campaign.starts), "a resume went back to an older checkpoint"
    assert committed_step(run_dir) == STEPS
    got = bundle()
    assert set(got) == set(reference.weights)
    different = [name for name in reference.weights if not torch.equal(reference.weights[name], got[name])]
    assert different == [], f"killed-and-resumed weights differ: {different}"


def test_ten_kills_on_local_disk_resume_to_the_uninterrupted_weights(tmp_path: Path, reference: Reference) -> None:
    run_dir = str(tmp_path / "run")
    env = train_env()
    campaign = run_campaign(run_dir, tmp_path, env, reference, seed=11)
    finish_and_check(campaign, run_dir, tmp_path, env,
                     lambda: load_file(tmp_path / "run" / "bundle" / "model.safetensors"), reference)


def test_ten_kills_on_s3_resume_to_the_uninterrupted_weights(s3, tmp_path: Path, reference: Reference) -> None:
    bucket = s3.new_bucket()
    run_dir = f"s3://{bucket}/run"
    env = train_env(s3.env)

    def bundle() -> dict[str, torch.Tensor]:
        body = s3.client().get_object(Bucket=bucket, Key="run/bundle/model.safetensors")["Body"].read()
        return load_safetensors(body)

    campaign = run_campaign(run_dir, tmp_path, env, reference, seed=12)
    finish_and_check(campaign, run_dir, tmp_path, env, bundle, reference)


def test_a_run_killed_while_writing_its_run_directory_can_be_resumed(tmp_path: Path, reference: Reference) -> None:
    """train() writes config.json, schema.json, model.json, then run.json; a kill lands between them."""
    for tries in range(3):  # on a busy machine the kill may come too late: try again in a fresh directory
        run = tmp_path / f"run-{tries}"
        command = ["--data", reference.data, "--run-dir", run, *TRAIN_FLAGS]
        attempt = Attempt(command, cwd=tmp_path, env=train_env())
        deadline = time.monotonic() + 60
        while not (run / "config.json").exists() and attempt.running() and time.monotonic() < deadline:
            pass  # no sleep: the three fsynced writes until run.json take only milliseconds
        assert attempt.kill(), attempt.stderr()
        if not (run / "run.json").exists():
            break
    else:
        pytest.skip("each kill came after run.json was written")

    resumed = Attempt(["--resume", run], cwd=tmp_path, env=train_env())
    assert resumed.finish() == 0, resumed.stderr()
    got = load_file(run / "bundle" / "model.safetensors")
    assert all(torch.equal(reference.weights[name], got[name]) for name in reference.weights)


def test_ten_kills_on_s3_through_s3torchconnector_resume_to_the_uninterrupted_weights(
    s3, tmp_path: Path, reference: Reference
) -> None:
    """The same campaign with TORCHKEEP_S3_BACKEND=s3torchconnector (path-style set in the AWS config file)."""
    pytest.importorskip("s3torchconnector", reason="s3torchconnector is not installed: pip install 'torchkeep[s3torchconnector]'")
    config = tmp_path / "aws-config"
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    bucket = s3.new_bucket()
    run_dir = f"s3://{bucket}/run"
    env = train_env({**s3.env, "TORCHKEEP_S3_BACKEND": "s3torchconnector", "AWS_CONFIG_FILE": str(config)})

    def bundle() -> dict[str, torch.Tensor]:
        body = s3.client().get_object(Bucket=bucket, Key="run/bundle/model.safetensors")["Body"].read()
        return load_safetensors(body)

    campaign = run_campaign(run_dir, tmp_path, env, reference, seed=13)
    finish_and_check(campaign, run_dir, tmp_path, env, bundle, reference)
