"""Text kept packed in memory (ids without padding + offsets): batches equal the padded encoding cut to
each batch's longest text, whatever the row order, through BatchLoader, with empty texts and two columns."""

from __future__ import annotations

import polars as pl
import torch

from torchkeep.data.loader import BatchLoader
from torchkeep.data.table import TableSchema
from torchkeep.data.text import PackedText, Vocab

REVIEWS = ["Great coffee, would buy again", "", None, "not good", "the coffee was not great at all, sadly",
           "good", "great great great value", "tea"] * 5


def cut(dense: torch.Tensor) -> torch.Tensor:
    """A dense [B, T, max_tokens] batch without the padding after its longest text (at least 1 wide)."""
    width = max(1, int((dense != 0).sum(dim=2).max()))
    return dense[:, :, :width]


def test_packed_ids_are_the_padded_ids_without_the_padding():
    values = pl.Series(REVIEWS, dtype=pl.String)
    vocab = Vocab.build(values, ngrams=2, distinct=True)
    ids, offsets = vocab.encode_packed(values, max_tokens=6)
    dense = vocab.encode(values, max_tokens=6)
    assert ids.dtype == torch.int32 and offsets.dtype == torch.int64 and len(offsets) == len(values) + 1
    for row in range(len(values)):
        text = ids[offsets[row] : offsets[row + 1]]
        assert torch.equal(dense[row, : len(text)], text) and not dense[row, len(text) :].any()
    assert int(offsets[-1]) == int((dense != 0).sum()) < dense.numel()  # no padding stored


def test_take_pads_each_batch_to_its_own_longest_text():
    frame = pl.DataFrame({"review": REVIEWS, "summary": [r[:9] if r else "meh" for r in REVIEWS],
                          "late": [i % 2 for i in range(len(REVIEWS))]})
    schema = TableSchema.fit(frame, target="late", text=["review", "summary"], max_tokens=5)
    dense = schema.transform(frame)["text"]
    packed = schema.transform(frame, packed_text=True)["text"]
    assert isinstance(packed, PackedText) and len(packed) == frame.height
    for rows in ([1, 2], [0, 4, 1], list(range(frame.height))[::-1], [7]):
        index = torch.tensor(rows)
        assert torch.equal(packed.take(index), cut(dense[index]))
    assert packed.take(torch.tensor([1, 2])).shape == (2, 2, 1)  # two texts without words: one padding column
    assert torch.equal(packed[3:9], cut(dense[3:9]))


def test_batch_loader_gathers_packed_text_like_dense_tensors():
    frame = pl.DataFrame({"review": REVIEWS, "late": [i % 3 == 0 for i in range(len(REVIEWS))]})
    schema = TableSchema.fit(frame, target="late", text=["review"], max_tokens=8)
    for shuffle in (True, False):
        dense = BatchLoader(schema.transform(frame), 7, shuffle=shuffle, seed=3)
        packed = BatchLoader(schema.transform(frame, packed_text=True), 7, shuffle=shuffle, seed=3)
        batches = list(zip(dense, packed, strict=True))
        assert len(batches) == 6
        for expected, got in batches:
            assert list(got) == list(expected)
            assert torch.equal(got["target"], expected["target"])
            assert torch.equal(got["text"], cut(expected["text"]))


def test_a_column_without_any_token_gives_padding_only():
    words = (torch.tensor([5, 6, 7], dtype=torch.int32), torch.tensor([0, 2, 2, 3]))  # rows of 2, 0 and 1 ids
    nothing = (torch.zeros(0, dtype=torch.int32), torch.zeros(4, dtype=torch.int64))
    packed = PackedText([words, nothing])
    assert packed.take(torch.tensor([2, 0, 1])).tolist() == [[[7, 0], [0, 0]], [[5, 6], [0, 0]], [[0, 0], [0, 0]]]
    assert packed[1:2].tolist() == [[[0], [0]]]
