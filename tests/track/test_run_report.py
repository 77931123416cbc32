"""`torchkeep report` and `torchkeep runs` on real runs: a binary one trained through the CLI (with
TensorBoard on) and a regression one through the Python API. The PNGs are opened with Pillow and
must be real pictures; summary.md must name the best validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import torchkeep
from torchkeep.cli import main

PIL = pytest.importorskip("PIL.Image", reason="Pillow reads the PNGs back")
pytest.importorskip("matplotlib")

EPOCHS = 2


@pytest.fixture(scope="module")
def runs(torchkeep, tmp_path_factory, make_table) -> Path:
    """runs/binary (CLI, --track tensorboard) and runs/regression (API, target dep_delay), in one workdir."""
    pytest.importorskip("tensorboard")
    workdir = tmp_path_factory.mktemp("report")
    make_table(600).write_csv(workdir / "flights.csv")
    result = torchkeep("train", "--data", "flights.csv", "--target", "late", "--epochs", EPOCHS, "--batch-size", 32,
                       "--log-every-steps", 2, "--track", "tensorboard", "--run-dir", "runs/binary", cwd=workdir)
    assert result.returncode == 0, result.stderr
    (workdir / "train.stderr").write_text(result.stderr)
    regression = train_regression(workdir)
    assert regression.valid["rmse"] > 0
    return workdir


def train_regression(workdir: Path) -> torchkeep.RunResult:
    return torchkeep.train(str(workdir / "flights.csv"), target="dep_delay", drop=["late"], epochs=EPOCHS,
                           batch_size=32, log_every_steps=3, run_dir=str(workdir / "runs" / "regression"), quiet=True)


def assert_real_picture(path: Path) -> None:
    """Opens as a PNG of a plot's size, and is not one flat colour: enough non-background pixels and colours."""
    with PIL.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 400 <= width <= 2000 and 400 <= height <= 2000, image.size
        pixels = image.convert("RGB")
        colors = pixels.getcolors(maxcolors=width * height)
    background = max(colors)[0]
    assert len(colors) > 50, f"{path.name}: {len(colors)} colours"
    assert 1 - background / (width * height) > 0.03, f"{path.name}: almost only background"


def test_non_tty_progress_is_one_line_per_epoch(runs):
    stderr = (runs / "train.stderr").read_text().splitlines()

    epoch_lines = [line for line in stderr if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == [f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)]
    assert all("valid_roc_auc" in line and "rows/s" in line for line in epoch_lines)
    assert "\r" not in "".join(stderr) and "\x1b[" not in "".join(stderr)  # no bar, no terminal codes


def test_report_of_a_binary_run_writes_plots_and_summary(torchkeep, runs):
    result = torchkeep("report", "runs/binary", cwd=runs)

    assert result.returncode == 0, result.stderr
    out = runs / "runs" / "binary" / "report"
    written = [Path(line).name for line in result.stdout.splitlines()]
    assert written == ["loss.png", "valid_accuracy.png", "valid_roc_auc.png", "lr.png", "throughput.png", "roc.png",
                       "summary.md"]
    for name in written[:-1]:
        assert_real_picture(out / name)
    summary = (out / "summary.md").read_text()
    run = json.loads((runs / "runs" / "binary" / "run.json").read_text())
    assert f"**roc_auc {run['valid']['roc_auc']:.4f}**" in summary  # the best validation is the one the run kept
    assert f"{EPOCHS} of {EPOCHS} epochs" in summary and "| train.batch_size | 32 |" in summary
    assert "![ROC curve (validation split)](roc.png)" in summary


def test_report_of_a_regression_run_plots_predicted_against_actual(runs):
    from torchkeep.report import write_report

    report = write_report(str(runs / "runs" / "regression"), str(runs / "regression-report"))

    names = [Path(f).name for f in report.files]
    assert {"loss.png", "valid_rmse.png", "valid_mae.png", "valid_r2.png", "predicted_vs_actual.png"} <= set(names)
    assert "roc.png" not in names and not report.notes
    for name in names[:-1]:
        assert_real_picture(runs / "regression-report" / name)
    assert "best (rmse, lower is better)" in (runs / "regression-report" / "summary.md").read_text()


def test_runs_lists_both_runs_with_task_metric_epochs_and_status(torchkeep, runs, capsys):
    table = torchkeep("runs", cwd=runs)  # default DIR: runs
    assert main(["runs", str(runs / "runs"), "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert table.returncode == 0, table.stderr
    for text in ("binary", "regression", "roc_auc 0.", "rmse ", f"{EPOCHS}/{EPOCHS}", "complete"):
        assert text in table.stdout
    assert [(r["name"], r["task"], r["status"], r["epochs_done"]) for r in listed] == [
        ("binary", "binary", "complete", EPOCHS), ("regression", "regression", "complete", EPOCHS)]


def test_report_without_metrics_is_one_error_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    (tmp_path / "bare").mkdir()

    codes = [main(["report", str(tmp_path / name)]) for name in ("empty", "bare", "missing")]

    errors = capsys.readouterr().err.strip().splitlines()
    assert codes == [2, 2, 2]
    assert errors == [
        f"error: {tmp_path}/empty/metrics.jsonl is empty: the run has logged nothing yet (it logs every"
        " log_every_steps optimizer steps and at each validation)",
        f"error: {tmp_path}/bare: no metrics.jsonl (not a torchkeep run directory, or training never started)",
        f"error: {tmp_path}/missing: no such run directory",
    ]


def test_runs_of_a_missing_directory_is_one_error_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/nowhere: no such directory\n"


def test_unknown_tracker_on_the_command_line_is_one_line_and_exit_2(torchkeep, tmp_path):
    result = torchkeep("train", "--track", "tensorboard,tensorbord", "--epochs", 1, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stderr == "error: unknown tracker 'tensorbord' (known: jsonl, tensorboard, wandb)\n"
    assert not (tmp_path / "runs").exists()


def test_summary_of_a_resumed_killed_run_keeps_the_later_record_of_a_step(tmp_path):
    from torchkeep.report import summarize_run

    events = [{"step": 2, "split": "train", "loss": 0.9}, {"step": 4, "split": "train", "loss": 0.8},
              {"step": 4, "split": "valid", "epoch": 1, "loss": 0.7, "roc_auc": 0.8},
              {"step": 4, "split": "train", "loss": 0.75},  # resumed from the checkpoint at step 2
              {"step": 6, "split": "valid", "epoch": 2, "loss": 0.6, "roc_auc": 0.85}]
    text = "\n".join(json.dumps(e) for e in events) + '\n{"step": 8, "split": "tr'  # killed mid-line
    (tmp_path / "metrics.jsonl").write_text(text)
    (tmp_path / "config.json").write_text(json.dumps({"train": {"monitor": "roc_auc", "monitor_mode": "max",
                                                                "epochs": 3}}))

    summary = summarize_run(str(tmp_path))

    assert [(e["step"], e["loss"]) for e in summary.train] == [(2, 0.9), (4, 0.75)]
    assert summary.best["step"] == 6 and summary.best_value == 0.85
    assert (summary.steps, summary.epochs_done, summary.epochs, summary.status) == (6, 2, 3, "unknown")
