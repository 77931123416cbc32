"""`torchkeep train` killed with SIGKILL at random moments, resumed until done: the same weights.

One run trains without interruption. Another is killed three times, each time at a random moment
once its newest checkpoint has moved a few steps on (so that some kills land while a checkpoint is
being written), and continued with `--resume` after each kill. Both bundles must hold the same
weights, bit for bit.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from kill_table import TRAIN_FLAGS, write_table

STEPS_PER_EPOCH = 43  # 5,400 training rows (6,000 less 10% for validation) in batches of 128
EPOCHS = 2



def torchkeep_train(*args: object, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "torchkeep", "train", *map(str, args)],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # one thread: fast for tiny models, same math in every run
    )


def latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "LATEST").read_text().removeprefix("step-"))
    except (FileNotFoundError, ValueError):
        return 0


def kill_when_past(process: subprocess.Popen[str], run_dir: Path, step: int, delay_s: float) -> str:
    """SIGKILL `process` `delay_s` after its newest checkpoint reaches `step`; its stderr."""
    deadline = time.monotonic() + 60
    while latest_step(run_dir) < step and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (at step {step}): {errors}"
    return errors


def resumed_from(errors: str) -> int:
    """The step a resumed run says it continued from ("resumed from step-000000025 (epoch 1, ...)")."""
    match = re.search(r"resumed from step-(\d+)", errors)
    assert match, f"the run did not resume from a checkpoint: {errors}"
    return int(match.group(1))


def test_killed_three_times_and_resumed_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    write_table(tmp_path / "flights.csv")
    rng = random.Random(2)  # kills 10, 15 and 20 steps apart: the last one lands in the second epoch
    reference = torchkeep_train("--data", "flights.csv", "--run-dir", "reference", *TRAIN_FLAGS, cwd=tmp_path)

    run_dir = tmp_path / "run"
    process = torchkeep_train("--data", "flights.csv", "--run-dir", "run", *TRAIN_FLAGS, cwd=tmp_path)
    starts = []
    for kill in range(3):
        # some checkpoints further on, then a random moment up to a few steps later
        target = latest_step(run_dir) + rng.choice([10, 15, 20])
        errors = kill_when_past(process, run_dir, target, delay_s=rng.uniform(0.0, 0.02))
        if kill > 0:
            starts.append(resumed_from(errors))
        assert not (run_dir / "bundle").exists()
        process = torchkeep_train("--resume", "run", cwd=tmp_path)

    _, errors = process.communicate(timeout=120)
    assert process.returncode == 0, errors
    starts.append(resumed_from(errors))
    assert starts == sorted(starts) and starts[0] >= 10  # each attempt went on from where the last one got

    _, errors = reference.communicate(timeout=120)
    assert reference.returncode == 0, errors

    expected = load_file(tmp_path / "reference" / "bundle" / "model.safetensors")
    got = load_file(run_dir / "bundle" / "model.safetensors")
    assert set(got) == set(expected)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert different == [], f"killed-and-resumed weights differ: {different} (resumed from {starts})"
    assert latest_step(run_dir) == EPOCHS * STEPS_PER_EPOCH
