"""`torchkeep tune --resume` after the driver is killed with SIGKILL mid-study: the study completes, trials
that had finished are not trained again, and no process of the killed driver's Ray is left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("ray.tune", reason="needs the tune extra: pip install 'torchkeep[tune]'")


def finished(study: Path) -> dict[str, bytes]:
    """Trials whose run completed: their metrics.jsonl, as it is now."""
    found = {}
    for run in sorted((study / "trials").glob("*/run.json")):
        try:
            if json.loads(run.read_text())["status"] == "complete":
                found[run.parent.name] = (run.parent / "metrics.jsonl").read_bytes()
        except (ValueError, OSError):  # being written
            continue
    return found


def test_resume_after_sigkill_completes_without_training_finished_trials_again(
        flights_split: tuple[Path, Path], tmp_path: Path, tune_args: Callable[..., list[str]],
        ray_processes: Callable[[Path], list[int]],
        torchkeep: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    study = tmp_path / "flights"
    log = tmp_path / "driver.log"
    with log.open("w") as output:
        driver = subprocess.Popen([sys.executable, "-m", "torchkeep", *tune_args(*flights_split, study)],
                                  cwd=tmp_path, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not finished(study):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)  # the driver dies at once: no shutdown of its Ray, no study.json update
    driver.wait()
    before = finished(study)
    unfinished = {run.parent.name: (json.loads(run.read_text())["created_at"], (run.parent / "metrics.jsonl").read_bytes())
                  for run in (study / "trials").glob("*/run.json")
                  if run.parent.name not in before and (run.parent / "metrics.jsonl").exists()}
    assert json.loads((study / "study.json").read_text())["status"] == "running"
    assert len(before) < 4

    done = torchkeep("tune", "--resume", study, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((study / "study.json").read_text())
    assert recorded["status"] == "complete" and len(recorded["trials"]) == 4
    assert {t["status"] for t in recorded["trials"]} <= {"complete", "stopped early"}
    for trial, metrics in before.items():  # not one more line: finished trials were not trained again
        assert (study / "trials" / trial / "metrics.jsonl").read_bytes() == metrics
    for trial, (created_at, metrics) in unfinished.items():  # continued (same run, its log appended), not started over
        assert json.loads((study / "trials" / trial / "run.json").read_text())["created_at"] == created_at
        assert (study / "trials" / trial / "metrics.jsonl").read_bytes().startswith(metrics)
    assert not ray_processes(study)
