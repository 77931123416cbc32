"""Bad input, as a user meets it on the command line.

Every case gets exit status 2 and ONE line on stderr that starts with "error:" and names the file,
column or setting at fault; never a traceback, and never a half-written run directory.
Unseen categories and nulls at predict / evaluate time are not errors at all.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest


def assert_user_error(result, *names: str) -> str:
    """The bad-input contract; returns the error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


def every_nth(n: int, value: object, column: str) -> pl.Expr:
    """`column` with every n-th row (starting at row 0) replaced by `value`."""
    return pl.when(pl.int_range(pl.len()) % n == 0).then(value).otherwise(pl.col(column)).alias(column)


@pytest.fixture
def train(torchkeep, tmp_path):
    """`train(*args)`: `torchkeep train ARGS --epochs 1 --run-dir run` in tmp_path."""

    def run(*args: object):
        return torchkeep("train", *args, "--epochs", 1, "--run-dir", "run", cwd=tmp_path)

    return run


@pytest.fixture(scope="module")
def trained_run(torchkeep, make_table, tmp_path_factory) -> Path:
    """A finished one-epoch run on the small flights-like table (absolute path to its run directory)."""
    workdir = tmp_path_factory.mktemp("trained")
    make_table().write_csv(workdir / "flights.csv")
    result = torchkeep("train", "--data", "flights.csv", "--target", "late", "--epochs", 1, "--run-dir", "run",
                       cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "run"


# -- training data --------------------------------------------------------------------------------


def test_missing_file(train, tmp_path):
    assert_user_error(train("--data", "nowhere.csv", "--target", "late"), "nowhere.csv", "no such file")
    assert not (tmp_path / "run").exists()


def test_unreadable_file(train, tmp_path):
    (tmp_path / "garbage.parquet").write_bytes(b"\x00\x01 not parquet at all " * 40)

    assert_user_error(train("--data", "garbage.parquet", "--target", "late"), "garbage.parquet", "cannot read")
    assert not (tmp_path / "run").exists()


def test_unknown_target_column(train, flights_csv, tmp_path):
    line = assert_user_error(train("--data", flights_csv.name, "--target", "arrival"), "flights.csv", "'arrival'")
    assert "not found" in line and "late" in line  # lists the columns there are
    assert not (tmp_path / "run").exists()


# Null targets, all-null and single-value columns are not errors: tests/data/test_hygiene.py.


def test_nan_in_continuous_column(train, make_table, tmp_path):
    # CSV reads "NaN" as null (a missing value), so a real NaN comes from Parquet
    make_table().with_columns(every_nth(5, float("nan"), "dep_delay")).write_parquet(tmp_path / "flights.parquet")

    line = assert_user_error(train("--data", "flights.parquet", "--target", "late"), "flights.parquet", "'dep_delay'")
    assert "NaN/inf" in line
    assert not (tmp_path / "run").exists()


def test_inf_in_continuous_column(train, make_table, tmp_path):
    make_table().with_columns(every_nth(5, float("inf"), "temperature")).write_csv(tmp_path / "flights.csv")

    line = assert_user_error(train("--data", "flights.csv", "--target", "late"), "flights.csv", "'temperature'")
    assert "NaN/inf" in line
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def inf_only_in_validation_file(torchkeep, make_table, tmp_path_factory):
    """`train --valid valid.csv` where only the validation file has an inf: (workdir, result)."""
    workdir = tmp_path_factory.mktemp("inf-valid")
    make_table().write_csv(workdir / "train.csv")
    make_table(rows=60, seed=1).with_columns(every_nth(10, float("inf"), "dep_delay")).write_csv(
        workdir / "valid.csv"
    )
    result = torchkeep("train", "--data", "train.csv", "--valid", "valid.csv", "--target", "late", "--epochs", 1,
                       "--run-dir", "run", cwd=workdir)
    return workdir, result


def test_inf_in_the_validation_file(inf_only_in_validation_file):
    _, result = inf_only_in_validation_file
    assert_user_error(result, "valid.csv", "'dep_delay'", "NaN/inf")


def test_a_run_that_fails_on_its_data_leaves_no_run_directory(inf_only_in_validation_file):
    workdir, result = inf_only_in_validation_file
    assert result.returncode == 2
    assert not (workdir / "run").exists(), sorted(p.name for p in (workdir / "run").iterdir())


def test_empty_table(train, make_table, tmp_path):
    make_table().head(0).write_csv(tmp_path / "flights.csv")  # the header only

    line = assert_user_error(train("--data", "flights.csv", "--target", "late"), "flights.csv", "empty")
    assert "0 rows" in line
    assert not (tmp_path / "run").exists()


# -- settings -------------------------------------------------------------------------------------


def test_batch_size_zero(train, flights_csv, tmp_path):
    assert_user_error(train("--data", flights_csv.name, "--target", "late", "--batch-size", 0), "batch_size", "got 0")
    assert not (tmp_path / "run").exists()


def test_unknown_toml_key(train, flights_csv, tmp_path):
    (tmp_path / "run.toml").write_text(
        '[data]\npath = "flights.csv"\ntarget = "late"\n\n[train]\nepochs = 1\nbatchsize = 64\n'
    )

    line = assert_user_error(train("run.toml"), "run.toml", "'batchsize'")
    assert "batch_size" in line  # the known names help the fix
    assert not (tmp_path / "run").exists()


# -- evaluate and predict on data that does not match the model -----------------------------------


def test_predict_on_a_table_without_a_trained_column(torchkeep, trained_run, make_table, tmp_path):
    make_table(rows=40, seed=1).drop("distance").write_csv(tmp_path / "new.csv")

    result = torchkeep("predict", trained_run, "--data", "new.csv", "--out", "predictions.csv", cwd=tmp_path)

    assert_user_error(result, "new.csv", "'distance'", "missing column")
    assert not (tmp_path / "predictions.csv").exists()


def test_evaluate_on_a_table_without_a_trained_column(torchkeep, trained_run, make_table, tmp_path):
    make_table(rows=40, seed=1).drop("hour").write_csv(tmp_path / "new.csv")

    result = torchkeep("evaluate", trained_run, "--data", "new.csv", cwd=tmp_path)

    assert_user_error(result, "new.csv", "'hour'", "missing column")


def test_unseen_categories_and_nulls_at_predict_time_are_not_errors(torchkeep, trained_run, make_table, tmp_path):
    new = make_table(rows=40, seed=1).drop("late").with_columns(
        carrier=pl.lit("ZZ"),  # never seen
        hour=pl.lit(99),  # never seen
        gate=pl.lit(None, dtype=pl.String),
        weekend=pl.lit(None, dtype=pl.Boolean),
        dep_delay=every_nth(2, None, "dep_delay"),  # had no nulls in training
        temperature=pl.lit(None, dtype=pl.Float64),
    )
    new.write_csv(tmp_path / "new.csv")

    result = torchkeep("predict", trained_run, "--data", "new.csv", "--out", "predictions.csv", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    predictions = pl.read_csv(tmp_path / "predictions.csv")
    assert predictions.height == 40
    probabilities = predictions.select("probability_False", "probability_True").to_numpy()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_unseen_categories_at_evaluate_time_are_not_errors(torchkeep, trained_run, make_table, tmp_path):
    make_table(rows=40, seed=2).with_columns(carrier=pl.lit("ZZ"), gate=pl.lit("Q")).write_csv(tmp_path / "new.csv")

    result = torchkeep("evaluate", trained_run, "--data", "new.csv", "--json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert 0 <= json.loads(result.stdout)["accuracy"] <= 1


# -- damaged runs ---------------------------------------------------------------------------------


def test_truncated_bundle_on_predict(torchkeep, trained_run, make_table, tmp_path):
    run = shutil.copytree(trained_run, tmp_path / "run")
    weights = run / "bundle" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    make_table(rows=10, seed=1).write_csv(tmp_path / "new.csv")

    result = torchkeep("predict", "run", "--data", "new.csv", "--out", "predictions.csv", cwd=tmp_path)

    assert_user_error(result, "bundle/model.safetensors", "truncated")
    assert not (tmp_path / "predictions.csv").exists()


@pytest.fixture(scope="module")
def resume_from_truncated_checkpoint(torchkeep, trained_run, tmp_path_factory):
    """`train --resume` on a copy of the run whose only checkpoint has a truncated model.safetensors."""
    workdir = tmp_path_factory.mktemp("truncated")
    shutil.copy(trained_run.parent / "flights.csv", workdir)  # the run's config names it relative to here
    run = shutil.copytree(trained_run, workdir / "run")
    (checkpoint,) = (run / "checkpoints").glob("step-*")
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = torchkeep("train", "--resume", "run", "--quiet", cwd=workdir)
    return checkpoint, result


def test_truncated_only_checkpoint_is_detected_on_resume(resume_from_truncated_checkpoint):
    checkpoint, result = resume_from_truncated_checkpoint
    assert "Traceback" not in result.stderr, result.stderr
    # whatever happens next, the user is told which file is damaged and how
    assert f"{checkpoint.name}/model.safetensors" in result.stderr
    assert "truncated" in result.stderr


def test_resume_fails_when_the_only_checkpoint_is_truncated(resume_from_truncated_checkpoint):
    checkpoint, result = resume_from_truncated_checkpoint
    assert_user_error(result, f"{checkpoint.name}/model.safetensors")
