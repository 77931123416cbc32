"""Tokenizer, vocabulary and text columns in TableSchema: what a text turns into, and that it survives JSON."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from torchkeep.data.table import TableSchema
from torchkeep.data.text import PAD, UNK, Vocab, check_texts, read_vectors, tokenize
from torchkeep.errors import DataError


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Café naïve Straße", ["café", "naïve", "straße"]),
        ("CAFÉ, NAÏVE!", ["café", "naïve"]),
        ("Great!!! 5/5 -- would buy again...", ["great", "5", "5", "would", "buy", "again"]),
        ("isn't it? ok:)", ["isn", "t", "it", "ok"]),
        ("日本語のテキスト Ελληνικά", ["日本語のテキスト", "ελληνικά"]),
        ("   \t\n ", []),
        ("", []),
        (None, []),
    ],
)
def test_tokenizer_lowercases_splits_unicode_words_and_drops_punctuation(text, tokens):
    assert tokenize(text) == tokens


def reviews() -> pl.Series:
    return pl.Series(["good good food", "not good", "bad food", None, "", "good tea"])


def test_vocab_has_pad_and_unk_first_then_tokens_by_frequency():
    vocab = Vocab.build(reviews())
    assert vocab.itos[:2] == [PAD, UNK]
    assert vocab.stoi[PAD] == 0 and vocab.stoi[UNK] == 1
    assert vocab.itos[2:] == ["good", "food", "bad", "not", "tea"]  # good x4, food x2, then ties by token
    assert vocab.lookup(["good", "never-seen"]) == [2, 1]


def test_min_freq_and_max_size_limit_the_vocabulary():
    assert Vocab.build(reviews(), min_freq=2).itos == [PAD, UNK, "good", "food"]
    assert Vocab.build(reviews(), max_size=1).itos == [PAD, UNK, "good"]


def test_word_pairs_are_tokens_and_unseen_pairs_are_dropped_while_unseen_words_are_unk():
    vocab = Vocab.build(reviews(), ngrams=2)
    assert "not good" in vocab.stoi and "good food" in vocab.stoi
    ids = vocab.encode(pl.Series(["not good zebra", None]), max_tokens=6)
    # not, "not good", good, <unk> ("good zebra" is an unseen pair: dropped), then padding
    assert ids.tolist() == [[vocab.stoi["not"], vocab.stoi["not good"], vocab.stoi["good"], 1, 0, 0], [0] * 6]


def test_distinct_keeps_each_token_once_per_text_in_order_of_first_appearance():
    vocab = Vocab.build(reviews(), distinct=True)
    assert vocab.encode(pl.Series(["good food good good tea"]), max_tokens=5).tolist() == [[2, 3, 6, 0, 0]]
    assert Vocab.from_dict(vocab.to_dict()).distinct


def test_encode_truncates_to_max_tokens():
    vocab = Vocab.build(reviews())
    assert vocab.encode(pl.Series(["good food bad tea"]), max_tokens=2).tolist() == [[2, 3]]


def test_vocab_round_trips_through_json():
    vocab = Vocab.build(reviews(), ngrams=2, min_freq=1, max_size=50)
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.itos == vocab.itos and again.stoi == vocab.stoi
    assert (again.ngrams, again.min_freq, again.max_size) == (2, 1, 50)
    texts = pl.Series(["not good at all", "café"])
    assert torch.equal(again.encode(texts, 8), vocab.encode(texts, 8))


def test_a_vocabulary_must_start_with_the_specials():
    with pytest.raises(DataError, match="<pad>"):
        Vocab(["good", "bad"])


def table() -> pl.DataFrame:
    return pl.DataFrame({
        "review": ["good food", "bad food", "not good", "good tea", "bad tea", "great"] * 5,
        "shop": ["a", "b", "a", "b", "a", "b"] * 5,
        "price": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 5,
        "score": ["great", "other", "other", "great", "other", "great"] * 5,
    })


def test_schema_with_a_text_column_transforms_to_token_ids_and_round_trips():
    schema = TableSchema.fit(table(), target="score", text=["review"], max_tokens=4)
    tensors = schema.transform(table())
    assert tensors["text"].shape == (30, 1, 4) and tensors["text"].dtype == torch.int32
    assert tensors["categorical"].shape == (30, 1) and tensors["continuous"].shape == (30, 1)
    again = TableSchema.from_json(schema.to_json())
    assert again.text[0].vocab.itos == schema.text[0].vocab.itos
    assert torch.equal(again.transform(table())["text"], tensors["text"])


def test_a_schema_without_text_keeps_its_format_and_an_old_schema_json_loads():
    schema = TableSchema.fit(table().drop("review"), target="score")
    saved = schema.to_dict()
    assert "text" not in saved  # unchanged format for tables
    again = TableSchema.from_dict(saved)
    assert again.text == [] and "text" not in again.transform(table())


def test_a_non_string_text_column_is_refused_naming_it():
    with pytest.raises(DataError, match="text column 'price'"):
        TableSchema.fit(table(), target="score", text=["price"])


@pytest.mark.parametrize(("value", "problem"), [(None, "null"), ("  ", "empty text"), ("x" * 100_001, "text longer than 100,000 characters")])
def test_rows_to_predict_need_a_text_of_reasonable_length(value, problem):
    frame = pl.DataFrame({"review": ["fine", value]}, schema={"review": pl.String})
    with pytest.raises(DataError, match=f"rows.csv: row 1, text column 'review': {problem}"):
        check_texts(frame, ["review"], "rows.csv")


def test_pretrained_vectors_are_aligned_by_word(tmp_path):
    vocab = Vocab.build(pl.Series(["good food", "good tea", "bad"]))
    path = tmp_path / "vectors.txt"
    path.write_text("4 3\nfood 1 2 3\nunrelated 9 9 9\ngood 4 5 6\ntea 0.5 0.25 -1\n")  # word2vec header
    vectors, found, dim = read_vectors(str(path), vocab)
    assert dim == 3
    assert vectors[vocab.stoi["good"]].tolist() == [4, 5, 6]
    assert vectors[vocab.stoi["food"]].tolist() == [1, 2, 3]
    assert vectors[vocab.stoi["tea"]].tolist() == [0.5, 0.25, -1]
    assert vocab.itos == [PAD, UNK, "good", "bad", "food", "tea"]
    assert found.tolist() == [False, False, True, False, True, True]
    assert vectors[vocab.stoi["bad"]].abs().sum() == 0


def test_a_vectors_file_with_ragged_lines_is_refused_with_the_line(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("good 1 2 3\nfood 1 2\n")
    with pytest.raises(DataError, match="line 2"):
        read_vectors(str(path), Vocab.build(pl.Series(["good food"])))


def test_an_unseen_word_becomes_its_known_character_ngrams():
    # "tastier" and "toasty" are rare (seen once, min_freq 2): their trigrams are learned, "~ast" twice
    vocab = Vocab.build(pl.Series(["tasty tea", "tasty food", "tastier snack", "toasty bread"]), min_freq=2, char_ngrams=3)
    assert vocab.itos == [PAD, UNK, "tasty", "~ast"]
    ids = vocab.encode(pl.Series(["tastey zzzz tasty"]), max_tokens=5)
    assert [vocab.itos[i] for i in ids[0].tolist()] == ["~ast", UNK, "tasty", PAD, PAD]
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert again.char_ngrams == 3 and torch.equal(again.encode(pl.Series(["tastey zzzz tasty"]), 5), ids)


def test_a_tokenizers_file_splits_the_text_and_travels_in_the_vocabulary_json():
    tokenizers = pytest.importorskip("tokenizers")
    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()  # keeps punctuation as tokens
    tokenizer.train_from_iterator(["Not good!", "good tea"], tokenizers.trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    vocab = Vocab.build(pl.Series(["Not good!", "good tea", "good!"]), tokenizer=tokenizer.to_str())

    assert vocab.tokens("Not good!") == ["Not", "good", "!"]  # no lower-casing: the tokenizer decides
    assert "!" in vocab.itos and "[UNK]" not in vocab.itos
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    texts = pl.Series(["good tea!", "Not new"])
    assert torch.equal(again.encode(texts, 8), vocab.encode(texts, 8))


def test_a_vocabulary_without_a_tokenizer_keeps_its_earlier_json():
    assert "tokenizer" not in Vocab.build(pl.Series(["good tea"])).to_dict()
