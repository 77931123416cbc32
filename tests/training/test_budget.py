"""The training budget of a table run: a rule of the row count, counted in optimizer steps."""

from __future__ import annotations

import math

import pytest

from torchkeep.training.budget import (
    IMAGE_EPOCHS,
    IMAGE_PIXELS_SEEN,
    MAX_BATCH,
    MAX_ROWS_SEEN,
    MIN_BATCH,
    MIN_EPOCHS,
    TARGET_STEPS,
    image_epochs,
    table_budget,
)


@pytest.mark.parametrize("rows", [1, 20, 237, 1_000, 3_700, 20_000, 45_000, 230_000, 5_000_000])
def test_the_rule_holds_for_any_row_count(rows):
    budget = table_budget(rows)
    assert MIN_BATCH <= budget.batch_size <= MAX_BATCH
    assert budget.batch_size & (budget.batch_size - 1) == 0  # a power of two
    per_epoch = math.ceil(rows / budget.batch_size)
    assert budget.steps == budget.epochs * per_epoch
    assert budget.epochs >= MIN_EPOCHS
    # about TARGET_STEPS steps, never more than an epoch beyond it, unless the minimum epochs need more
    cap = min(TARGET_STEPS, MAX_ROWS_SEEN // budget.batch_size)
    assert budget.steps < cap + per_epoch or budget.epochs == MIN_EPOCHS


def test_small_tables_get_small_batches_and_many_epochs():
    small, large = table_budget(800), table_budget(200_000)
    assert (small.batch_size, large.batch_size) == (32, 1024)
    assert small.epochs > 100 and large.epochs < 30
    assert small.valid_every_steps is not None  # many short epochs: validation by steps
    assert "validation every" in small.describe(800) and "batches of 32" in small.describe(800)


def test_the_time_cap_bounds_rows_seen_on_large_tables():
    budget = table_budget(3_000_000)
    assert budget.epochs == MIN_EPOCHS  # a huge table: a few passes, whatever the cap
    budget = table_budget(100_000)
    assert budget.steps * budget.batch_size <= MAX_ROWS_SEEN + math.ceil(100_000 / budget.batch_size) * budget.batch_size


def test_a_chosen_batch_size_keeps_the_step_budget():
    budget = table_budget(10_000, batch_size=100)
    assert budget.batch_size == 100 and budget.steps >= TARGET_STEPS


def test_a_run_prints_its_budget_and_saves_it(torchkeep, make_table, tmp_path):
    make_table(rows=400).write_csv(tmp_path / "t.csv")
    result = torchkeep("train", "--data", "t.csv", "--target", "late", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stderr.splitlines() if line.startswith("budget:"))
    expected = table_budget(360)
    assert f"{expected.steps:,} steps" in line and f"of {expected.batch_size}" in line
    import json

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["batch_size"] == expected.batch_size
    assert config["train"]["epochs"] == expected.epochs
    assert config["train"]["early_stopping_patience"] == expected.early_stopping_patience
    assert config["train"]["anneal_on_stall"] is True  # the budget anneals after its first stall


def test_flags_that_set_the_budget_are_kept(torchkeep, make_table, tmp_path):
    make_table(rows=400).write_csv(tmp_path / "t.csv")
    result = torchkeep("train", "--data", "t.csv", "--target", "late", "--epochs", 2, "--batch-size", 50,
                       "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "budget:" not in result.stderr
    import json

    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (train["epochs"], train["batch_size"], train["early_stopping_patience"]) == (2, 50, None)
    assert train["anneal_on_stall"] is False


def test_an_ensemble_shares_the_time_cap_among_its_members():
    one, eight = table_budget(45_000), table_budget(45_000, members=8)
    assert one.batch_size == eight.batch_size
    assert eight.steps * eight.batch_size * 8 <= MAX_ROWS_SEEN + math.ceil(45_000 / 1024) * 1024 * 8
    assert eight.steps < one.steps
    assert table_budget(2_000, members=8).steps == table_budget(2_000).steps  # small tables: under the cap either way


def test_small_steps_run_on_one_thread_unless_threads_are_chosen():
    assert table_budget(800, members=8).threads == 1  # 32 rows x 8 members a step
    assert table_budget(200_000, members=8).threads is None  # 1024 x 8: torch's default
    assert table_budget(3_000).threads == 1


def test_the_chosen_thread_count_is_recorded(torchkeep, make_table, tmp_path):
    import json

    make_table(rows=200).write_csv(tmp_path / "t.csv")
    for threads, run in ((None, "default"), (2, "chosen")):
        flags = ["--threads", threads] if threads else []
        result = torchkeep("train", "--data", "t.csv", "--target", "late", "--steps", 20, *flags, "--run-dir", run,
                           cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        train = json.loads((tmp_path / run / "config.json").read_text())["train"]
        assert train["threads"] == (threads or 1)
        budget = next(line for line in result.stderr.splitlines() if line.startswith("budget:"))
        assert ("one CPU thread" in budget) == (threads is None)


@pytest.mark.parametrize(("images", "side"), [(1_293, 8), (1_293, 28), (1_293, 64), (54_000, 28), (50, 224), (1, 1)])
def test_image_epochs_follow_the_images_number_and_size(images, side):
    epochs = image_epochs(images, side, side)
    assert MIN_EPOCHS <= epochs <= IMAGE_EPOCHS
    assert epochs == IMAGE_EPOCHS or epochs == MIN_EPOCHS or epochs * images * side * side <= IMAGE_PIXELS_SEEN


def test_small_images_keep_every_epoch_and_large_ones_are_capped():
    assert image_epochs(1_293, 8, 8) == IMAGE_EPOCHS  # the built-in digits, as before
    assert image_epochs(1_293, 28, 28) < IMAGE_EPOCHS
    assert image_epochs(1_293, 28, 28) > image_epochs(1_293, 64, 64) >= MIN_EPOCHS
    assert image_epochs(54_000, 28, 28) == MIN_EPOCHS  # MNIST-sized: the floor
