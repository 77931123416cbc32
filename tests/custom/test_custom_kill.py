"""torchkeep.fit on a user's own model, killed with SIGKILL mid-epoch and started again with the
same command (resume=True): it ends with the weights of a run that was never interrupted, bit for bit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("train_own.py")
STEPS_PER_EPOCH = 125  # 4,000 rows in batches of 32
EPOCHS = 2


def train_own(run_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(SCRIPT), str(run_dir)], cwd=SCRIPT.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "LATEST").read_text().removeprefix("step-"))
    except (FileNotFoundError, ValueError):
        return 0


def test_killed_mid_epoch_and_run_again_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    reference = train_own(tmp_path / "reference")
    _, errors = reference.communicate(timeout=300)
    assert reference.returncode == 0, errors

    run_dir = tmp_path / "run"
    process = train_own(run_dir)
    deadline = time.monotonic() + 120
    while latest_step(run_dir) < 20 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill: {errors}"
    assert not (run_dir / "bundle").exists()

    process = train_own(run_dir)
    _, errors = process.communicate(timeout=300)
    assert process.returncode == 0, errors
    resumed = re.search(r"resumed from step-(\d+) \(epoch 1, batch (\d+) of 125\)", errors)
    assert resumed, errors
    assert int(resumed.group(1)) >= 20 and int(resumed.group(2)) > 0  # mid-epoch, past the first checkpoints

    expected = load_file(tmp_path / "reference" / "bundle" / "model.safetensors")
    got = load_file(run_dir / "bundle" / "model.safetensors")
    assert set(got) == set(expected)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert different == [], f"killed-and-resumed weights differ: {different} (resumed from step {resumed.group(1)})"
    assert latest_step(run_dir) == EPOCHS * STEPS_PER_EPOCH
