"""The mistakes a user makes with `torchkeep tune` are one line each on stderr (exit status 2), said before
any Ray process starts or any study file is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from torchkeep.cli import main


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("space, expected", [
    ("learning_rate = {loguniform = [1e-4, 1e-1]}",
     "[tune.space]: 'learning_rate' is not a setting a study can search; searchable: "),
    ("lr = {loguniform = [1e-1, 1e-4]}", "lr = {loguniform = [0.1, 0.0001]} is an empty range"),
])
def test_a_bad_search_space_is_one_line(space: str, expected: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "study.toml"
    config.write_text(f"[data]\nexample = \"flights\"\n\n[tune]\ntrials = 4\n\n[tune.space]\n{space}\n")
    line = one_line_error(capsys, "tune", str(config), "--run-dir", str(tmp_path / "study"))
    assert expected in line
    if "searchable" in line:  # the valid names are listed
        assert all(name in line for name in ("lr", "dropout", "hidden_sizes", "batch_size", "weight_decay"))
    assert not (tmp_path / "study").exists()


def test_a_metric_the_task_does_not_produce_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line_error(capsys, "tune", "--example", "flights", "--monitor", "rmse", "--run-dir", str(tmp_path / "study"))
    assert line == ("error: --monitor rmse: a binary run does not produce it; its validation metrics are loss,"
                    " accuracy, roc_auc, log_loss")
    assert not (tmp_path / "study").exists()


def test_without_the_tune_extra_the_error_names_the_pip_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed: `import ray` raises ImportError
    line = one_line_error(capsys, "tune", "--example", "flights", "--run-dir", str(tmp_path / "study"))
    assert line == "error: ray[tune] is not installed: pip install 'torchkeep[tune]'"
