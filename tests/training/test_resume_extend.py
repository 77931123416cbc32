"""`torchkeep train --resume RUN --epochs N`: a finished or killed run trained further, exactly.

With a constant learning rate a run extended from 2 to 4 epochs ends with the weights of a run
started with 4, bit for bit (also after a SIGKILL mid-run). One-cycle is rebuilt for the new total
and moved to the step reached: from there the learning rates are those of the longer run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

FLAGS = ["--target", "late", "--batch-size", 64, "--deterministic", "--seed", 3, "--checkpoint-every-steps", 2,
         "--threads", 1, "--log-every-steps", 1]


def weights(run: Path) -> dict:
    return load_file(str(run / "bundle" / "model.safetensors"))


def train(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "torchkeep", "train", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def workdir(make_table, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extend")
    make_table(rows=600).write_csv(root / "t.csv")
    for name, epochs, schedule in (("long", 4, "constant"), ("short", 2, "constant"),
                                   ("long-cycle", 4, "onecycle"), ("short-cycle", 2, "onecycle")):
        result = train("--data", "t.csv", *FLAGS, "--epochs", epochs, "--schedule", schedule, "--run-dir", name,
                       cwd=root)
        assert result.returncode == 0, result.stderr
    return root


def test_a_finished_run_extended_equals_the_longer_run(workdir):
    shutil.copytree(workdir / "short", workdir / "extended")
    result = train("--resume", "extended", "--epochs", 4, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "extending extended from 2 to 4 epochs" in result.stderr
    long, extended = weights(workdir / "long"), weights(workdir / "extended")
    assert long.keys() == extended.keys()
    assert all(long[k].equal(extended[k]) for k in long)
    assert json.loads((workdir / "extended" / "config.json").read_text())["train"]["epochs"] == 4
    assert json.loads((workdir / "extended" / "run.json").read_text())["status"] == "complete"


def test_one_cycle_continues_on_the_longer_schedule(workdir):
    shutil.copytree(workdir / "short-cycle", workdir / "extended-cycle")
    result = train("--resume", "extended-cycle", "--epochs", 4, "--quiet", cwd=workdir)
    assert result.returncode == 0, result.stderr

    def rates(run: str) -> dict[int, float]:
        events = [json.loads(line) for line in (workdir / run / "metrics.jsonl").read_text().splitlines()]
        return {e["step"]: e["lr"] for e in events if e.get("split") == "train"}

    long, extended = rates("long-cycle"), rates("extended-cycle")
    done = max(rates("short-cycle"))
    later = [step for step in long if step > done]
    assert later and all(extended[step] == pytest.approx(long[step], rel=1e-9) for step in later)


def test_fewer_epochs_than_trained_and_other_settings_are_refused(workdir):
    result = train("--resume", "short", "--epochs", 1, cwd=workdir)
    assert result.returncode == 2 and "has trained 2 epoch(s)" in result.stderr
    result = train("--resume", "short", "--epochs", 5, "--lr", 0.1, "--batch-size", 8, cwd=workdir)
    assert result.returncode == 2
    assert "only --epochs or --steps can change" in result.stderr and "--lr" in result.stderr and "--batch-size" in result.stderr


def test_killed_mid_run_then_extended_equals_the_longer_run(workdir):
    run = workdir / "killed"
    process = subprocess.Popen([sys.executable, "-m", "torchkeep", "train", "--data", "t.csv", *map(str, FLAGS),
                                "--epochs", "2", "--schedule", "constant", "--run-dir", "killed"], cwd=workdir,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    latest = run / "checkpoints" / "LATEST"
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if latest.exists() and int(latest.read_text().removeprefix("step-") or 0) >= 6:
            break
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before the kill"
    assert not (run / "bundle").exists()
    result = train("--resume", "killed", "--epochs", 4, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "resumed from step-" in result.stderr
    long, extended = weights(workdir / "long"), weights(run)
    assert all(long[k].equal(extended[k]) for k in long)


def test_steps_extend_a_run_to_whole_epochs(workdir):
    # 540 training rows in batches of 64: 9 steps an epoch, so 30 steps are 4 epochs
    shutil.copytree(workdir / "short", workdir / "extended-steps")
    result = train("--resume", "extended-steps", "--steps", 30, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "extending extended-steps from 2 to 4 epochs" in result.stderr
    long, extended = weights(workdir / "long"), weights(workdir / "extended-steps")
    assert all(long[k].equal(extended[k]) for k in long)
    result = train("--resume", "short", "--steps", 40, "--epochs", 6, cwd=workdir)
    assert result.returncode == 2 and "give one of them" in result.stderr


def test_a_new_run_trains_the_steps_asked_for(workdir):
    result = train("--data", "t.csv", *FLAGS, "--steps", 30, "--schedule", "constant", "--run-dir", "by-steps",
                   cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "budget: 36 steps = 4 epoch(s) of 9 batches of 64" in result.stderr
    long, by_steps = weights(workdir / "long"), weights(workdir / "by-steps")
    assert all(long[k].equal(by_steps[k]) for k in long)
    result = train("--data", "t.csv", "--target", "late", "--steps", 30, "--epochs", 3, "--run-dir", "both", cwd=workdir)
    assert result.returncode == 2 and "--steps and --epochs" in result.stderr
