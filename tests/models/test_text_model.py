"""TextTableMLP: text encoders next to entity embeddings, and pretrained word vectors that stay put when frozen."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

import torchkeep
from torchkeep.checkpoint import tensors as tensor_files
from torchkeep.data.text import Vocab
from torchkeep.models.build import build_model


def review_table(rows: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    good = rng.random(rows) < 0.5
    words = {True: ["great", "tasty", "love", "fresh"], False: ["stale", "bad", "awful", "broken"]}
    filler = ["the", "tea", "box", "it", "was"]
    reviews = [" ".join(rng.choice(words[bool(g)], 2).tolist() + rng.choice(filler, 3).tolist()) for g in good]
    return pl.DataFrame({"review": reviews, "shop": rng.choice(["a", "b", "c"], rows).tolist(),
                         "price": rng.normal(10, 2, rows), "score": np.where(good, "great", "other").tolist()})


@pytest.mark.parametrize("encoder", ["bag", "cnn", "gru"])
def test_every_encoder_gives_one_vector_per_text_and_zeros_for_a_text_without_words(encoder):
    model = build_model("text_table_mlp", {
        "cardinalities": [4], "embedding_dims": [2], "n_continuous": 1, "out_features": 1, "hidden_sizes": [8],
        "vocab_sizes": [20, 30], "text_embedding_dim": 6, "text_encoder": encoder,
    }).eval()
    text = torch.randint(2, 20, (5, 2, 7))
    text[0] = 0  # no words at all in row 0
    out = model(torch.randint(0, 4, (5, 1)), torch.randn(5, 1), text)
    assert out.shape == (5,) and torch.isfinite(out).all()
    assert model.text_encoders[0](text[:1, 0]).abs().sum() == 0


def test_frozen_pretrained_vectors_are_in_the_bundle_unchanged_after_training(tmp_path):
    frame = review_table()
    vocab = Vocab.build(frame["review"], ngrams=2, min_freq=2)
    rng = np.random.default_rng(1)
    chosen = ["great", "stale", "tea", "bad"]  # words of the vocabulary, plus one that is not in it
    vectors = {word: rng.normal(size=4).round(4).tolist() for word in [*chosen, "unrelated"]}
    path = tmp_path / "glove.txt"
    path.write_text("".join(f"{w} {' '.join(map(str, v))}\n" for w, v in vectors.items()))

    torchkeep.train(frame, target="score", text_columns=["review"], run_dir=str(tmp_path / "run"),
                             embeddings=str(path), freeze_embeddings=True, epochs=2, quiet=True)

    bundle = json.loads((tmp_path / "run/bundle/bundle.json").read_text())
    itos = bundle["preprocessor"]["schema"]["text"][0]["vocab"]["itos"]
    assert set(chosen) <= set(itos) <= set(vocab.itos)  # fitted on the training split, a part of the table
    weights = tensor_files.decode((tmp_path / "run/bundle/model.safetensors").read_bytes(), "model.safetensors")
    table = weights["text_encoders.0.embedding.weight"]
    assert table.shape == (len(itos), 4)  # the file's size sets the vector size
    for word in chosen:
        assert table[itos.index(word)].tolist() == pytest.approx(vectors[word], abs=1e-6)


def test_coverage_of_pretrained_vectors_is_reported(tmp_path, capsys):
    path = tmp_path / "vectors.txt"
    path.write_text("great 1 0\ntasty 0 1\n")
    torchkeep.train(review_table(), target="score", text_columns=["review"], run_dir=str(tmp_path / "run"),
                    embeddings=str(path), epochs=1)
    vocabulary = len(json.loads((tmp_path / "run/schema.json").read_text())["text"][0]["vocab"]["itos"]) - 2
    assert f"embeddings: 2 of {vocabulary:,} vocabulary tokens of 'review' found in {path}" in capsys.readouterr().err


def test_a_stopped_text_run_resumes_to_the_same_weights(tmp_path):
    settings = {"target": "score", "text_columns": ["review"], "epochs": 2, "every_steps": 1, "quiet": True}
    torchkeep.train(review_table(), run_dir=str(tmp_path / "whole"), **settings)
    torchkeep.train(review_table(), run_dir=str(tmp_path / "stopped"), stop_at_step=3, **settings)
    torchkeep.train(review_table(), resume=str(tmp_path / "stopped"), quiet=True)

    def weights(run: str) -> dict[str, torch.Tensor]:
        return tensor_files.decode((tmp_path / run / "bundle/model.safetensors").read_bytes(), "model.safetensors")

    whole, resumed = weights("whole"), weights("stopped")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_sqrt_pooling_sums_the_token_vectors_over_the_square_root_of_their_count():
    from torchkeep.models.text import TextEncoder

    encoder = TextEncoder(10, 4, "bag", weighting="sqrt")
    ids = torch.tensor([[3, 4, 5, 0, 0], [7, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.int32)
    vectors = encoder.embedding.weight.detach()

    out = encoder(ids)

    torch.testing.assert_close(out[0], vectors[[3, 4, 5]].sum(0) / 3 ** 0.5)
    torch.testing.assert_close(out[1], vectors[7])
    assert out[2].abs().sum() == 0  # no words: zeros, not NaN
    model = build_model("text_table_mlp", {
        "cardinalities": [], "embedding_dims": [], "n_continuous": 0, "out_features": 1, "hidden_sizes": [4],
        "vocab_sizes": [10], "text_embedding_dim": 4, "text_weighting": "sqrt"})
    model.set_token_weights(0, [5.0] * 10)  # IDF is not for sqrt pooling: ignored
    assert torch.equal(model.text_encoders[0].token_weights, torch.ones(10))
