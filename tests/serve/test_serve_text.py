"""A real `torchkeep serve` of a model with a text column: raw strings in, the same answers as `predict`."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest


def review_table(rows: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    good = rng.random(rows) < 0.5
    words = {True: ["great", "tasty", "love"], False: ["stale", "bad", "awful"]}
    reviews = [" ".join(rng.choice(words[bool(g)], 2).tolist()) + " tea" for g in good]
    return pl.DataFrame({"review": reviews, "shop": rng.choice(["a", "b"], rows).tolist(),
                         "score": np.where(good, "great", "other").tolist()})


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    import torchkeep

    run_dir = tmp_path_factory.mktemp("serve-text") / "run"
    torchkeep.train(review_table(), target="score", text_columns=["review"], run_dir=str(run_dir), epochs=2, quiet=True)
    return run_dir


@pytest.fixture(scope="module")
def text_server(start_server, text_run):
    return start_server(text_run)


def test_served_predictions_equal_predict_on_the_same_raw_text(text_server, text_run, torchkeep, tmp_path):
    rows = [{"review": "Great tea, love it!", "shop": "a"}, {"review": "stale... AWFUL", "shop": "b"},
            {"review": "Café naïve Straße, never seen words", "shop": None}, {"review": "tea", "shop": "zz"}]
    pl.DataFrame(rows).write_csv(tmp_path / "rows.csv")
    predicted = torchkeep("predict", text_run, "--data", "rows.csv", "--out", "predicted.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    expected = pl.read_csv(tmp_path / "predicted.csv")

    response = text_server.post({"rows": rows})

    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert [r["prediction"] for r in served] == expected["prediction"].to_list()
    for record, p_great in zip(served, expected["probability_great"]):
        assert record["probabilities"]["great"] == pytest.approx(p_great, abs=1e-6)


@pytest.mark.parametrize(
    ("review", "message"),
    [
        ("", "expected text with at least one word (got an empty string)"),
        ("   ", "expected text with at least one word"),
        (None, "expected a non-empty string (text)"),
        (42, "expected a non-empty string (text)"),
        (["great"], "expected a non-empty string (text)"),
        ("great " * 20_000, "text of 120,000 characters; at most 100,000"),
    ],
)
def test_bad_text_gets_a_422_naming_the_row_and_field(text_server, review, message):
    response = text_server.post({"rows": [{"review": "fine", "shop": "a"}, {"review": review, "shop": "a"}]})
    assert response.status_code == 422, response.text
    assert "rows[1].review" in response.text and message in response.text


def test_metadata_describes_the_text_column(text_server):
    import requests

    columns = requests.get(f"{text_server.url}/metadata", timeout=10).json()["columns"]
    text = [c for c in columns if c["name"] == "review"]
    assert text and text[0]["type"] == "text" and text[0]["vocabulary"] > 2
