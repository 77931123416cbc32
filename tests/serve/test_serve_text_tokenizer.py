"""A Hugging Face `tokenizers` file splits a text column: trained with `--tokenizer FILE`, then predict
and serve use the copy kept in the run (the original file is gone by then) and agree."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

pytest.importorskip("tokenizers")

SENTENCES = ["great tasty tea, loved it", "stale and awful biscuits", "fresh crunchy crackers!",
             "terrible taste, not good", "wonderful flavour", "bad packaging and stale"]


def trained_tokenizer(path) -> None:
    """A small WordPiece tokenizer, trained here on a few sentences (so words split into pieces)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=70, special_tokens=["[UNK]"]))
    tokenizer.save(str(path))


def review_table(rows: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    good = rng.random(rows) < 0.5
    words = {True: ["great", "tasty", "loved", "wonderful"], False: ["stale", "awful", "terrible", "bad"]}
    reviews = [" ".join(rng.choice(words[bool(g)], 2).tolist()) + " crackers!" for g in good]
    return pl.DataFrame({"review": reviews, "shop": rng.choice(["a", "b"], rows).tolist(),
                         "score": np.where(good, "great", "other").tolist()})


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, torchkeep):
    cwd = tmp_path_factory.mktemp("text-tokenizer")
    trained_tokenizer(cwd / "tokenizer.json")
    review_table().write_csv(cwd / "reviews.csv")
    result = torchkeep("train", "--data", "reviews.csv", "--target", "score", "--text-column", "review",
                       "--tokenizer", "tokenizer.json", "--epochs", 8, "--batch-size", 32, "--lr", 1e-2,
                       "--run-dir", "run", cwd=cwd)
    assert result.returncode == 0, result.stderr
    (cwd / "tokenizer.json").unlink()  # predict and serve must use the run's own copy
    return cwd


def test_the_vocabulary_holds_the_tokenizers_pieces_and_its_json(tokenizer_run):
    vocab = json.loads((tokenizer_run / "run/schema.json").read_text())["text"][0]["vocab"]
    assert json.loads(vocab["tokenizer"])["model"]["type"] == "WordPiece"
    assert any(token.startswith("##") for token in vocab["itos"])  # word pieces, not whole words
    assert "!" in vocab["itos"]  # the tokenizer keeps punctuation; torchkeep's own words drop it
    bundle = json.loads((tokenizer_run / "run/bundle/bundle.json").read_text())
    assert bundle["preprocessor"]["schema"]["text"][0]["vocab"]["tokenizer"] == vocab["tokenizer"]


def test_predict_and_serve_agree_without_the_original_file(tokenizer_run, torchkeep, start_server):
    rows = [{"review": "Great tasty crackers!", "shop": "a"}, {"review": "STALE, awful", "shop": "b"},
            {"review": "never seen words, wonderfully", "shop": None}]
    pl.DataFrame(rows).write_csv(tokenizer_run / "rows.csv")
    predicted = torchkeep("predict", "run", "--data", "rows.csv", "--out", "predicted.csv", cwd=tokenizer_run)
    assert predicted.returncode == 0, predicted.stderr
    expected = pl.read_csv(tokenizer_run / "predicted.csv")
    assert expected["probability_great"][0] > expected["probability_great"][1]  # the words were learned

    response = start_server(tokenizer_run / "run").post({"rows": rows})

    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    assert [r["prediction"] for r in served] == expected["prediction"].to_list()
    for record, p_great in zip(served, expected["probability_great"]):
        assert record["probabilities"]["great"] == pytest.approx(p_great, abs=1e-6)


def test_a_file_that_is_not_a_tokenizer_is_one_clear_error(torchkeep, tmp_path):
    review_table(40).write_csv(tmp_path / "reviews.csv")
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    result = torchkeep("train", "--data", "reviews.csv", "--target", "score", "--text-column", "review",
                       "--tokenizer", "tokenizer.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "tokenizer.json: not a Hugging Face tokenizers file" in result.stderr and "Traceback" not in result.stderr
