"""The workflow as a newcomer runs it: train the built-in example, look at its checkpoints, evaluate,
predict to CSV and Parquet; the same through the Python API; a TOML config with a flag over it."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from torchkeep.cli import build_parser, main
from torchkeep.data.builtin import get_example


@pytest.fixture(scope="module")
def example(torchkeep, tmp_path_factory):
    """`torchkeep train --run-dir flights-run --epochs 1` on the built-in example, plus a 500-row sample
    of that table to evaluate and predict on: (workdir, CompletedProcess)."""
    workdir = tmp_path_factory.mktemp("newcomer")
    pl.read_parquet(get_example("flights").path).sample(500, seed=0).write_parquet(workdir / "sample.parquet")
    result = torchkeep("train", "--run-dir", "flights-run", "--epochs", 1, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir, result


def test_train_prints_the_run_and_validation_metrics(example):
    workdir, result = example

    assert "run: flights-run" in result.stdout
    validation = re.search(r"^validation: (.*)$", result.stdout, re.MULTILINE).group(1)
    metrics = dict(zip(validation.split()[::2], map(float, validation.split()[1::2])))
    assert {"accuracy", "roc_auc", "log_loss"} <= metrics.keys()  # loss is shown once, as log_loss
    assert metrics["roc_auc"] > 0.75  # one epoch on the example already learns
    assert "Traceback" not in result.stderr
    assert (workdir / "flights-run" / "bundle" / "bundle.json").is_file()


def test_checkpoints_lists_complete_checkpoints(torchkeep, example):
    workdir, _ = example
    names = sorted(p.name for p in (workdir / "flights-run" / "checkpoints").glob("step-*"))
    assert names

    table = torchkeep("checkpoints", "flights-run", cwd=workdir)
    listed = json.loads(torchkeep("checkpoints", "flights-run", "--verify", "--json", cwd=workdir).stdout)

    assert table.returncode == 0, table.stderr
    for name in names:
        assert name in table.stdout
    assert "complete" in table.stdout
    assert [c["name"] for c in listed] == names
    assert {c["status"] for c in listed} == {"complete"}
    assert all(c["epoch"] == 1 and c["size_bytes"] > 0 and "valid_roc_auc" in c["metrics"] for c in listed)


def test_evaluate_json_prints_one_json_object(torchkeep, example):
    workdir, _ = example

    result = torchkeep("evaluate", "flights-run", "--data", "sample.parquet", "--json", cwd=workdir)

    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    metrics = json.loads(result.stdout)
    assert {"accuracy", "roc_auc", "log_loss"} <= metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["roc_auc"] <= 1


@pytest.mark.parametrize("out", ["predictions.parquet", "predictions.csv"])
def test_predict_writes_predictions_and_probabilities(torchkeep, example, out):
    workdir, _ = example

    result = torchkeep("predict", "flights-run", "--data", "sample.parquet", "--out", out, cwd=workdir)

    assert result.returncode == 0, result.stderr
    written = pl.read_parquet(workdir / out) if out.endswith(".parquet") else pl.read_csv(workdir / out)
    assert written.height == 500
    assert {"prediction", "probability_False", "probability_True"} <= set(written.columns)
    assert written.get_column("prediction").dtype == pl.Boolean  # the target's own labels
    total = written.get_column("probability_False") + written.get_column("probability_True")
    assert (total - 1).abs().max() < 1e-5
    sample = pl.read_parquet(workdir / "sample.parquet")
    assert written.get_column("carrier").to_list() == sample.get_column("carrier").to_list()  # input rows kept


def test_datasets_lists_the_flights_example(torchkeep, tmp_path):
    result = torchkeep("datasets", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("flights:")
    assert "'late'" in result.stdout and "binary" in result.stdout


def test_the_console_script_starts(tmp_path):
    script = Path(sys.executable).with_name("torchkeep")

    result = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    for command in ("train", "evaluate", "predict", "checkpoints", "datasets"):
        assert command in result.stdout


def subcommands() -> list[str]:
    (choices,) = [a.choices for a in build_parser()._actions if getattr(a, "choices", None)]
    return sorted(choices)


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as raised:
        main([command, "--help"])

    assert raised.value.code == 0
    assert f"usage: torchkeep {command}" in capsys.readouterr().out


def test_python_api_trains_loads_and_predicts_a_pandas_frame(make_table, tmp_path):
    import torchkeep  # the package (the `torchkeep` fixture elsewhere in this file is the command)

    table = make_table()
    table.write_csv(tmp_path / "flights.csv")

    result = torchkeep.train(str(tmp_path / "flights.csv"), target="late", epochs=1, batch_size=64,
                             run_dir=str(tmp_path / "api-run"), quiet=True)

    assert result.run_dir == str(tmp_path / "api-run")
    assert {"loss", "accuracy", "roc_auc", "log_loss"} <= result.valid.keys()

    predictor = torchkeep.load(result.run_dir)
    new = make_table(rows=25, seed=3).drop("late").to_pandas()  # nulls arrive as NaN / None
    predictions = predictor.predict(new)

    assert predictor.task == "binary"
    assert predictions.height == 25
    assert predictions.columns == ["prediction", "probability_False", "probability_True"]
    assert predictions.get_column("probability_True").is_finite().all()
    assert 0 <= predictor.evaluate(make_table(rows=50, seed=4).to_pandas())["accuracy"] <= 1


def test_toml_config_is_applied_and_a_flag_overrides_it(torchkeep, make_table, tmp_path):
    make_table().write_csv(tmp_path / "flights.csv")
    (tmp_path / "run.toml").write_text(
        """
[data]
path = "flights.csv"
target = "late"
drop = ["gate"]

[model]
hidden_sizes = [32, 16]

[train]
epochs = 1
batch_size = 64

[train.optim]
lr = 0.003
"""
    )

    result = torchkeep("train", "run.toml", "--batch-size", 32, "--run-dir", "toml-run", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "toml-run" / "config.json").read_text())
    assert saved["train"]["batch_size"] == 32  # the flag wins
    assert saved["train"]["epochs"] == 1  # the file's settings stay
    assert saved["train"]["optim"]["lr"] == 0.003
    assert saved["model"]["hidden_sizes"] == [32, 16]
    assert saved["data"]["path"] == str(tmp_path / "flights.csv")  # saved absolute, so --resume works from anywhere
    assert (saved["data"]["target"], saved["data"]["drop"]) == ("late", ["gate"])
    schema = json.loads((tmp_path / "toml-run" / "schema.json").read_text())
    assert "gate" not in [c["name"] for c in schema["categorical"] + schema["continuous"]]
