"""Text columns: a tokenizer, a vocabulary fitted on the training split, and token ids in memory.

The tokenizer (one definition, used by training, predict and serving alike):
- text is lower-cased (Unicode-aware: "Straße" -> "straße", "CAFÉ" -> "café");
- words are the runs of Unicode word characters (regex `\\w+` of polars' Rust regex engine:
  letters and digits of any script, combining marks, `_`); everything else (punctuation, spaces,
  symbols, emoji) separates words and is dropped: "naïve, isn't it?" -> naïve | isn | t | it;
- empty text and null give no tokens;
- with `ngrams=2`, every pair of neighbouring words is also a token ("not good"), as fastText does:
  a bag of words and word pairs catches negation that a bag of words alone misses;
- with `char_ngrams=n` (optional), a word that is not in the vocabulary becomes its character n-grams
  (of "<word>", marked "~": "tastey" -> ~<ta ~tas ~ast ~ste ~tey ~ey>) that are; their vectors are
  learned from the training split's rare words (seen fewer than min_freq times), so a misspelling or
  an unseen inflection still says something. Only where none of its n-grams is known is it `<unk>`.

`Vocab`: index 0 is `<pad>` (filling after the last token), 1 is `<unk>` (a word not in the
vocabulary). Other entries are ordered by training frequency (ties by the token), kept when seen at
least `min_freq` times, at most `max_size` of them. An unseen word maps to `<unk>`; an unseen word
pair is dropped (it would only add noise to `<unk>`).

Everything runs as polars column operations (lower-case, extract_all, explode, join): no Python
loop per row.

With a Hugging Face `tokenizers` file (`Vocab.build(..., tokenizer=JSON text)`, optional extra
`torchkeep[text]`), that tokenizer's normalizer, pre-tokenizer and model replace the lower-casing and
`\\w+` above (its post-processor is not used: no [CLS] / [SEP]); its token *strings* then feed the same
Vocab (min_freq, max_size, word pairs, each token once per text), so the vocabulary is still fitted on
the training split and the tokenizer's own ids (made for another corpus) are not used. Its JSON is
kept in the Vocab's JSON, so predict and serve need no copy of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.errors import DataError, MissingExtraError

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1
WORD_PATTERN = r"\w+"
MAX_TEXT_CHARS = 100_000  # per value at predict / serve time: longer texts are refused, not truncated silently


def token_lists(values: pl.Series, tokenizer: Any = None) -> pl.Series:
    """Each text's words (or a `tokenizers.Tokenizer`'s tokens), as a list column (null, empty -> [])."""
    if tokenizer is not None:
        texts = values.cast(pl.String).fill_null("").to_list()
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)  # batched in Rust threads
        return pl.Series([encoding.tokens for encoding in encodings], dtype=pl.List(pl.String))
    words = values.cast(pl.String).str.to_lowercase().str.extract_all(WORD_PATTERN)
    return words.fill_null([]) if words.null_count() else words


def tokenize(text: str | None, tokenizer: Any = None) -> list[str]:
    """The tokenizer on one text: `tokenize("Café naïve, Straße!") == ["café", "naïve", "straße"]`."""
    return token_lists(pl.Series([text], dtype=pl.String), tokenizer)[0].to_list()


def load_tokenizer(text: str, source: str) -> Any:
    """A `tokenizers.Tokenizer` from its JSON text (lazy import: the optional extra `torchkeep[text]`)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingExtraError("tokenizers", "text") from None
    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # noqa: BLE001 (tokenizers raises a plain Exception on bad JSON)
        raise DataError(f"{source}: not a Hugging Face tokenizers file (tokenizer.json): {error}") from None


def read_tokenizer(path: str) -> str:
    """The JSON text of a tokenizer file, checked by loading it once."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the tokenizer file ({getattr(error, 'strerror', None) or error})") from None
    load_tokenizer(text, path)
    return text


def _exploded(values: pl.Series, ngrams: int, tokenizer: Any = None) -> pl.DataFrame:
    """One row per token: `row` (input row), `position` (order within the row), `token`, `pair`.

    Word pairs are interleaved after their first word (w0, w0 w1, w1, w1 w2, ...), so truncating to
    max_tokens keeps the start of a text together with its pairs."""
    frame = (
        pl.DataFrame({"token": token_lists(values, tokenizer)})
        .with_row_index("row")
        .explode("token")
        .drop_nulls("token")
        .with_columns(position=pl.int_range(pl.len()).over("row") * ngrams, pair=pl.lit(False))
    )
    if ngrams == 1:
        return frame
    pairs = frame.with_columns(
        token=pl.col("token") + " " + pl.col("token").shift(-1).over("row"), position=pl.col("position") + 1,
        pair=pl.lit(True),
    ).drop_nulls("token")
    return pl.concat([frame, pairs]).sort("row", "position")


def _char_grams(words: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each row's `token` (a word) as its character n-grams of "<word>", marked "~" (no word has it),
    in `sub` order; a word shorter than n - 2 characters gives one n-gram, itself with its markers."""
    return (
        words.with_columns(token=pl.lit("<") + pl.col("token") + pl.lit(">"))
        .with_columns(sub=pl.int_ranges(0, (pl.col("token").str.len_chars() - n + 1).clip(lower_bound=1)))
        .explode("sub")
        .with_columns(token=pl.lit("~") + pl.col("token").str.slice(pl.col("sub"), n), sub=pl.col("sub") + 1)
    )


@dataclass
class Vocab:
    """Token <-> index, with `<pad>` = 0 and `<unk>` = 1. Saved as JSON (`to_dict`)."""

    itos: list[str]
    ngrams: int = 1
    min_freq: int = 1
    max_size: int | None = None
    # Each token once per text (a set of words, as a binary bag of words), in order of first
    # appearance: for the bag encoder, where a word said five times otherwise outweighs the rest.
    distinct: bool = False
    char_ngrams: int = 0  # 0: off; n: unseen words become their known character n-grams
    stoi: dict[str, int] = field(init=False, repr=False)
    # Inverse document frequency per index, known only where the vocabulary was just built (it goes
    # into the model's weights, not into this JSON): log((1 + n) / (1 + df)) + 1, as scikit-learn.
    idf: list[float] | None = field(default=None, repr=False)
    tokenizer: str | None = field(default=None, repr=False)  # a tokenizers JSON; None: lower-case + \w+
    _tokenizer: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.itos[:2] != [PAD, UNK]:
            raise DataError(f"a vocabulary starts with {PAD!r}, {UNK!r} (got {self.itos[:2]})")
        self.stoi = {token: index for index, token in enumerate(self.itos)}
        if self.tokenizer is not None:
            self._tokenizer = load_tokenizer(self.tokenizer, "the vocabulary's tokenizer")

    def tokens(self, text: str | None) -> list[str]:
        """One text's tokens, as this vocabulary tokenizes them (before word pairs and lookup)."""
        return tokenize(text, self._tokenizer)

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, values: pl.Series, *, ngrams: int = 1, min_freq: int = 1, max_size: int | None = None,
              distinct: bool = False, char_ngrams: int = 0, tokenizer: str | None = None) -> Vocab:
        """Fit on training texts only: tokens seen >= min_freq times, most frequent first, at most max_size."""
        if ngrams not in (1, 2):
            raise DataError(f"text ngrams must be 1 (words) or 2 (words and word pairs) (got {ngrams})")
        if min_freq < 1 or (max_size is not None and max_size < 1):
            raise DataError(f"vocabulary min_freq and max_size must be >= 1 (got {min_freq}, {max_size})")
        exploded = _exploded(values, ngrams, load_tokenizer(tokenizer, "tokenizer") if tokenizer else None)
        counts = (
            exploded.group_by("token").agg(pl.len().alias("count"), pl.col("row").n_unique().alias("documents"))
            .filter(pl.col("count") >= min_freq).sort(["count", "token"], descending=[True, False])
        )
        if char_ngrams:
            words = exploded.filter(~pl.col("pair")).group_by("token").agg(pl.len().alias("count"),
                                                                          pl.col("row").unique().alias("rows"))
            rare = words.filter(pl.col("count") < min_freq).explode("rows").select(pl.col("rows").alias("row"), "token")
            grams = (
                _char_grams(rare, char_ngrams).group_by("token").agg(pl.len().alias("count"),
                                                                      pl.col("row").n_unique().alias("documents"))
                .filter(pl.col("count") >= min_freq)
            )
            counts = pl.concat([counts, grams.select(counts.columns)]).sort(["count", "token"], descending=[True, False])
        if max_size is not None:
            counts = counts.head(max_size)
        idf = (np.log((1 + len(values)) / (1 + counts.get_column("documents").to_numpy())) + 1).tolist()
        return cls([PAD, UNK, *counts.get_column("token").to_list()], ngrams=ngrams, min_freq=min_freq,
                   max_size=max_size, distinct=distinct, char_ngrams=char_ngrams, idf=[0.0, 1.0, *idf],
                   tokenizer=tokenizer)

    def lookup(self, tokens: list[str]) -> list[int]:
        return [self.stoi.get(token, UNK_INDEX) for token in tokens]

    def _ids(self, values: pl.Series, max_tokens: int) -> pl.DataFrame:
        """`row`, `position`, `id` of each kept token, sorted by row then position."""
        exploded = _exploded(values, self.ngrams, self._tokenizer)
        table = pl.DataFrame({"token": self.itos[2:], "id": np.arange(2, len(self.itos), dtype=np.int64)})
        joined = exploded.join(table, on="token", how="left").with_columns(sub=pl.lit(0, pl.Int64))
        if self.char_ngrams:
            joined = self._with_char_grams(joined, table)
        return (
            joined.sort("row", "position", "sub")
            .filter(pl.col("id").is_not_null() | ~pl.col("pair"))  # unseen words -> <unk>, unseen pairs dropped
            .filter(pl.lit(not self.distinct) | pl.struct("row", "id").is_first_distinct())
            .with_columns(pl.col("id").fill_null(UNK_INDEX), position=pl.int_range(pl.len()).over("row"))
            .filter(pl.col("position") < max_tokens)
            .select("row", "position", "id")
        )

    def encode(self, values: pl.Series, max_tokens: int) -> torch.Tensor:
        """int32 [N, max_tokens] token ids, padded with 0 and truncated after max_tokens tokens (int32: half
        the memory of int64; embedding layers take either)."""
        ids = self._ids(values, max_tokens)
        out = np.zeros((len(values), max_tokens), dtype=np.int32)
        out[ids.get_column("row").to_numpy(), ids.get_column("position").to_numpy()] = ids.get_column("id").to_numpy()
        return torch.from_numpy(out)

    def encode_packed(self, values: pl.Series, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same ids without padding: (int32 ids of every text one after another, int64 offsets [N + 1];
        text i is ids[offsets[i]:offsets[i + 1]])."""
        ids = self._ids(values, max_tokens)
        lengths = np.bincount(ids.get_column("row").to_numpy(), minlength=len(values))
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return torch.from_numpy(ids.get_column("id").to_numpy().astype(np.int32)), torch.from_numpy(offsets)

    def _with_char_grams(self, joined: pl.DataFrame, table: pl.DataFrame) -> pl.DataFrame:
        """Unseen words replaced, in place, by their character n-grams that are in the vocabulary."""
        unseen = pl.col("id").is_null() & ~pl.col("pair")
        grams = (
            _char_grams(joined.filter(unseen).select("row", "position", "token", "pair"), self.char_ngrams)
            .join(table, on="token", how="inner")
        )
        covered = grams.select("row", "position").unique()
        kept = joined.join(covered, on=["row", "position"], how="anti")  # a word with known n-grams leaves
        return pl.concat([kept, grams.select(kept.columns)])

    def to_dict(self) -> dict[str, Any]:
        data = {"itos": self.itos, "ngrams": self.ngrams, "min_freq": self.min_freq, "max_size": self.max_size,
                "distinct": self.distinct, "char_ngrams": self.char_ngrams}
        if self.tokenizer is not None:  # only then: vocabularies without one keep their earlier JSON
            data["tokenizer"] = self.tokenizer
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocab:
        return cls(list(data["itos"]), ngrams=data.get("ngrams", 1), min_freq=data.get("min_freq", 1),
                   max_size=data.get("max_size"), distinct=data.get("distinct", False),
                   char_ngrams=data.get("char_ngrams", 0), tokenizer=data.get("tokenizer"))


@dataclass
class TextColumn:
    """A text column of a table: its vocabulary and how many token ids each row keeps."""

    name: str
    vocab: Vocab
    max_tokens: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_tokens": self.max_tokens, "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextColumn:
        return cls(name=data["name"], max_tokens=data["max_tokens"], vocab=Vocab.from_dict(data["vocab"]))


class PackedText:
    """Token ids of a table's text columns in memory without padding: per column, every row's ids one
    after another (int32) and where each row starts (int64 offsets). A review of 80 tokens costs 80 ids,
    not max_tokens. Batches come out dense, int32 [B, T, L] 0-padded, where L is the longest text of
    that batch (at least 1): `take(rows)` for a tensor of row indices, `packed[a:b]` for a range.
    The data loaders (BatchLoader) gather these whole batches like any other tensor."""

    def __init__(self, columns: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not columns or len({len(offsets) for _, offsets in columns}) != 1:
            raise DataError("packed text needs one or more columns with the same number of rows")
        self.columns = columns
        self.rows = len(columns[0][1]) - 1

    def __len__(self) -> int:
        return self.rows

    @property
    def row_bytes(self) -> int:
        """Mean bytes per row (ids and offsets), for sizing gathers."""
        return max(1, sum(ids.nbytes + offsets.nbytes for ids, offsets in self.columns) // max(1, self.rows))

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        starts = [offsets[rows] for _, offsets in self.columns]
        lengths = [offsets[rows + 1] - start for (_, offsets), start in zip(self.columns, starts, strict=True)]
        width = max(1, max(int(length.max()) if len(length) else 0 for length in lengths))
        positions = torch.arange(width)
        out = torch.empty(len(rows), len(self.columns), width, dtype=torch.int32)
        for column, ((ids, _), start, length) in enumerate(zip(self.columns, starts, lengths, strict=True)):
            # Read `width` ids from each row's start (clamped inside the array) and zero what lies past
            # the row's end: 2.5x faster than indexing with a boolean mask, which has to count first.
            index = (start.unsqueeze(1) + positions).clamp_(max=max(0, len(ids) - 1))
            real = positions < length.unsqueeze(1)
            out[:, column] = ids[index] * real if len(ids) else 0
        return out

    def __getitem__(self, rows: slice) -> torch.Tensor:
        return self.take(torch.arange(self.rows)[rows])


def text_values(frame: pl.DataFrame, name: str, source: str) -> pl.Series:
    column = frame.get_column(name)
    if column.dtype not in (pl.String, pl.Categorical, pl.Null) and not isinstance(column.dtype, pl.Enum):
        raise DataError(f"{source}: text column '{name}' has type {column.dtype}; expected strings")
    return column.cast(pl.String)


def check_texts(frame: pl.DataFrame, names: list[str], source: str) -> None:
    """Rows to predict on must each have a text: null, empty or too long text is an error naming the row."""
    for name in names:
        values = text_values(frame, name, source)
        lengths = values.str.len_chars()
        for bad, what in (
            (values.is_null(), "null (expected text)"),
            (values.str.strip_chars().str.len_chars() == 0, "empty text (expected at least one word)"),
            (lengths > MAX_TEXT_CHARS, f"text longer than {MAX_TEXT_CHARS:,} characters"),
        ):
            bad = bad.fill_null(False)
            if bad.any():
                first = int(bad.arg_true()[0])
                raise DataError(f"{source}: row {first}, text column '{name}': {what};"
                                f" {int(bad.sum())} such row(s)")


def read_vectors(path: str, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Rows of a word2vec / GloVe text file for the words of `vocab`.

    Returns (vectors [len(vocab), dim] with zeros where not found, found mask [len(vocab)], dim).
    A first line of two integers (word2vec's "count dim" header) is skipped. Only words in the
    vocabulary are parsed, so a large file costs one pass and little memory."""
    vectors: dict[int, list[float]] = {}
    dim = None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue
                if len(parts) < 2:
                    continue
                index = vocab.stoi.get(parts[0])
                if dim is None:
                    dim = len(parts) - 1
                elif len(parts) - 1 != dim:
                    raise DataError(f"{path}: line {number} has {len(parts) - 1} numbers, earlier lines {dim}")
                if index is None or index < 2:
                    continue
                try:
                    vectors[index] = [float(v) for v in parts[1:]]
                except ValueError:
                    raise DataError(f"{path}: line {number}: expected a word and {dim} numbers") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read word vectors ({error.strerror or error})") from None
    if dim is None:
        raise DataError(f"{path}: no word vectors found (expected lines 'word v1 v2 ...')")
    matrix = torch.zeros(len(vocab), dim)
    found = torch.zeros(len(vocab), dtype=torch.bool)
    if vectors:
        index = torch.tensor(list(vectors))
        matrix[index] = torch.tensor(list(vectors.values()))
        found[index] = True
    return matrix, found, dim
