"""A table with a text column next to categorical and continuous columns, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest


def review_table(rows: int = 240, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    good = rng.random(rows) < 0.5
    words = {True: ["great", "tasty", "love", "fresh", "not bad"], False: ["stale", "bad", "awful", "not good"]}
    reviews = [" ".join(rng.choice(words[bool(g)], 2).tolist()) + " Café crème, naïve!" for g in good]
    return pl.DataFrame({"review": reviews, "shop": rng.choice(["a", "b", "c"], rows).tolist(),
                         "price": rng.normal(10, 2, rows).round(2), "score": np.where(good, "great", "other").tolist()})


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, torchkeep):
    cwd = tmp_path_factory.mktemp("text-cli")
    review_table().write_csv(cwd / "reviews.csv")
    result = torchkeep("train", "--data", "reviews.csv", "--target", "score", "--text-column", "review",
                           "--epochs", 4, "--batch-size", 32, "--lr", 1e-2, "--run-dir", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return cwd, result


def test_train_with_a_text_column_next_to_table_columns(text_run):
    cwd, result = text_run
    schema = json.loads((cwd / "run/schema.json").read_text())
    assert [c["name"] for c in schema["categorical"]] == ["shop"]
    assert [c["name"] for c in schema["continuous"]] == ["price"]
    assert schema["text"][0]["name"] == "review" and "not good" in schema["text"][0]["vocab"]["itos"]
    roc_auc = float(result.stdout.split("roc_auc ")[1].split()[0])
    assert roc_auc > 0.9  # the words decide the label


def test_predict_takes_raw_text_and_unknown_words_are_served(torchkeep, text_run):
    cwd, _ = text_run
    pl.DataFrame({"review": ["great tasty", "stale and awful", "zzz qqq never seen"], "shop": ["a", "z", None],
                  "price": [9.0, 11.0, None]}).write_csv(cwd / "new.csv")
    result = torchkeep("predict", "run", "--data", "new.csv", "--out", "preds.csv", cwd=cwd)
    assert result.returncode == 0, result.stderr
    predictions = pl.read_csv(cwd / "preds.csv")
    assert predictions["prediction"].to_list()[:2] == ["great", "other"]
    assert predictions.height == 3


@pytest.mark.parametrize(("review", "message"), [("", "row 1, text column 'review': null (expected text)"),
                                                  ("   ", "row 1, text column 'review': empty text")])
def test_predict_refuses_a_row_without_text_naming_row_and_column(torchkeep, text_run, review, message):
    cwd, _ = text_run
    pl.DataFrame({"review": ["great", review], "shop": ["a", "b"], "price": [1.0, 2.0]}).write_csv(cwd / "bad.csv")
    result = torchkeep("predict", "run", "--data", "bad.csv", "--out", "bad-preds.csv", cwd=cwd)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_a_text_column_that_is_not_text_is_one_clear_error(torchkeep, tmp_path):
    review_table(40).write_csv(tmp_path / "reviews.csv")
    result = torchkeep("train", "--data", "reviews.csv", "--target", "score", "--text-column", "price", cwd=tmp_path)
    assert result.returncode == 2
    assert "text column 'price' has type Float64; expected strings" in result.stderr


def test_datasets_lists_the_reviews_example(torchkeep, tmp_path):
    result = torchkeep("datasets", cwd=tmp_path)
    assert "reviews: 4,000 rows, target 'score' (binary)" in result.stdout
    assert "small_fine_foods" in result.stdout
