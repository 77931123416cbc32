"""A whole study, as a user runs it: `torchkeep tune`, then `runs`, `report`, `evaluate` and `serve` on its
results. ASHA stops trials that fall behind; every trial is a run with a bundle; `best` is servable."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import requests

from torchkeep.cli import main

pytest.importorskip("ray.tune", reason="needs the tune extra: pip install 'torchkeep[tune]'")


@pytest.fixture(scope="module")
def study(flights_split: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory,
          torchkeep: Callable[..., subprocess.CompletedProcess[str]], tune_args: Callable[..., list[str]]
          ) -> tuple[Path, dict, str]:
    folder = tmp_path_factory.mktemp("study")
    done = torchkeep(*tune_args(*flights_split, folder / "flights"), cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "flights", json.loads((folder / "flights" / "study.json").read_text()), done.stdout


def test_asha_stops_trials_that_fall_behind_and_each_keeps_a_bundle(
        study: tuple[Path, dict, str], ray_processes: Callable[[Path], list[int]]) -> None:
    directory, recorded, _ = study
    assert recorded["status"] == "complete" and len(recorded["trials"]) == 4
    stopped = [t for t in recorded["trials"] if t["stopped_early"]]
    assert stopped, recorded["trials"]
    for trial in recorded["trials"]:
        run = json.loads((Path(trial["run_dir"]) / "run.json").read_text())
        assert run["status"] == ("stopped early" if trial["stopped_early"] else "complete")
        assert (Path(trial["run_dir"]) / "bundle" / "bundle.json").exists()
        assert trial["epochs"] < 4 if trial["stopped_early"] else trial["epochs"] == 4
    assert not ray_processes(directory)  # the study's local Ray is shut down


def test_best_evaluates_to_the_metric_the_study_recorded(study: tuple[Path, dict, str], flights_split: tuple[Path, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    directory, recorded, stdout = study
    assert recorded["best"]["value"] == max(t["best"] for t in recorded["trials"])
    assert (directory / "best").resolve() == Path(recorded["best"]["run_dir"]).resolve()
    assert f"best: trial {recorded['best']['trial']}" in stdout
    assert main(["evaluate", str(directory / "best"), "--data", str(flights_split[1]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["roc_auc"] == pytest.approx(recorded["best"]["value"], abs=1e-6)


def test_runs_shows_the_leaderboard_and_report_plots_each_trial(study: tuple[Path, dict, str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    directory, recorded, _ = study
    assert main(["runs", str(directory)]) == 0
    board = capsys.readouterr().out
    assert "valid_roc_auc" in board and "stopped early" in board
    assert all(t["trial"] in board for t in recorded["trials"])
    assert main(["report", str(directory)]) == 0
    png = directory / "report" / "trials_roc_auc.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_loads_the_best_trial(study: tuple[Path, dict, str], flights_split: tuple[Path, Path]) -> None:
    directory, _, _ = study
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = directory / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "-m", "torchkeep", "serve", str(directory / "best"), "--port",
                                   str(port)], stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        rows = pl.read_parquet(flights_split[1]).drop("late").head(3).to_dicts()
        answer = requests.post(f"http://127.0.0.1:{port}/predict", json={"rows": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == 3
        assert all(sum(p["probabilities"].values()) == pytest.approx(1.0) for p in predictions), predictions
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
