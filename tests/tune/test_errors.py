"""The mistakes a user makes with `torchkeep tune` are one line each on stderr (exit status 2), said before
any Ray process starts or any study file is written."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Torchkeep = Callable[..., subprocess.CompletedProcess[str]]


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("space, expected", [
    ("learning_rate = {loguniform = [1e-4, 1e-1]}",
     "[tune.space]: 'learning_rate' is not a setting a study can search; searchable: "),
    ("lr = {loguniform = [1e-1, 1e-4]}", "lr = {loguniform = [0.1, 0.0001]} is an empty range"),
])
def test_a_bad_search_space_is_one_line(space: str, expected: str, tmp_path: Path, torchkeep: Torchkeep) -> None:
    (tmp_path / "study.toml").write_text(f"[data]\nexample = \"flights\"\n\n[tune]\ntrials = 4\n\n[tune.space]\n{space}\n")
    line = one_line_error(torchkeep("tune", "study.toml", "--run-dir", "study", cwd=tmp_path))
    assert expected in line
    if "searchable" in line:  # the valid names are listed
        assert all(name in line for name in ("lr", "dropout", "hidden_sizes", "batch_size", "weight_decay"))
    assert not (tmp_path / "study").exists()


def test_a_metric_the_task_does_not_produce_is_one_line(tmp_path: Path, torchkeep: Torchkeep) -> None:
    line = one_line_error(torchkeep("tune", "--example", "flights", "--monitor", "rmse", "--run-dir", "study",
                                    cwd=tmp_path))
    assert line == ("error: --monitor rmse: a binary run does not produce it; its validation metrics are loss,"
                    " accuracy, roc_auc, log_loss")
    assert not (tmp_path / "study").exists()


def test_without_the_tune_extra_the_error_names_the_pip_command(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['ray'] = None  # as if ray were not installed\n"
            "from torchkeep.cli import main; sys.exit(main(['tune', '--example', 'flights', '--run-dir', 'study']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert one_line_error(done) == "error: ray[tune] is not installed: pip install 'torchkeep[tune]'"
