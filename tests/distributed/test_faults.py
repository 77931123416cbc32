"""A worker killed with SIGKILL: the elastic agent stops the others; with --max-restarts the workers start
again and resume from the last committed checkpoint; without restarts left, the run exits non-zero within
seconds with one clear line, and `--resume` then completes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def workers(launcher: int) -> list[int]:
    """The worker processes the launcher started (its children running `torchkeep train`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher and b"torchkeep" in command:
            found.append(int(entry.name))
    return sorted(found)


def wait_for(condition, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_killed_worker_restarts_then_stops_the_run_and_resume_completes(torchkeep, make_table, tmp_path):
    make_table(rows=3000).write_csv(tmp_path / "flights.csv")
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "torchkeep", "train", "--data", "flights.csv", "--target", "late", "--nproc", "2",
         "--max-restarts", "1", "--epochs", "4", "--batch-size", "16", "--threads", "1", "--checkpoint-every-steps", "20",
         "--run-dir", "run", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: (run / "checkpoints" / "LATEST").exists() and len(workers(launcher.pid)) == 2,
                 "a first checkpoint")
        os.kill(workers(launcher.pid)[1], signal.SIGKILL)
        # restarted (max-restarts 1): every rank resumes the run from its last committed checkpoint
        rank_log = run / "logs" / "rank-1.log"
        wait_for(lambda: rank_log.exists() and "restart 1" in rank_log.read_text(), "the restart")
        wait_for(lambda: len(workers(launcher.pid)) == 2, "the restarted workers")
        killed = time.monotonic()
        os.kill(workers(launcher.pid)[0], signal.SIGKILL)  # no restart left
        _, stderr = launcher.communicate(timeout=60)
        stopped_s = time.monotonic() - killed
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert stopped_s < 60
    assert "error: torchkeep train: worker rank" in stderr and "SIGKILL" in stderr, stderr[-2000:]
    assert json.loads((run / "run.json").read_text())["status"] != "complete"

    resumed = torchkeep("train", "--resume", "run", "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert (run / "bundle" / "MANIFEST.json").exists()
