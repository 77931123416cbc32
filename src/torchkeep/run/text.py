"""What a run with text columns does differently: its training defaults, the model's arguments and
pretrained word vectors. Kept apart from run/tables.py so that tables without text never meet it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from torchkeep.config import DataConfig, RunConfig
from torchkeep.data.table import TableSchema
from torchkeep.data.text import read_tokenizer, read_vectors
from torchkeep.models.build import text_model_args
from torchkeep.models.tabular import TabularModelConfig
from torchkeep.training.loop import TrainConfig
from torchkeep.training.optim import OptimConfig

ARCHITECTURE = "text_table_mlp"

# Training defaults of a run with text columns, replacing the table defaults (3 epochs of batch
# 1024 are a dozen optimizer steps on a few thousand reviews); a setting given explicitly is kept.
# Chosen by 5-fold cross-validation on small_fine_foods' training_data (bench/text_cv.py): sqrt
# pooling (the sum of token vectors over sqrt(tokens), the scale of an L2-normalised count vector)
# learns faster than the mean and overfits after about 5 epochs; one-cycle ends at a learning rate
# near zero, so the last epoch's weights need no best-epoch pick, and 98% of the rows can train
# (the 2% held out only report a validation metric).
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 5, "batch_size": 64, "lr": 1e-3, "hidden_sizes": [32],
                                       "text_weighting": "sqrt", "restore_best": False, "valid_fraction": 0.02,
                                       # numeric columns beside text as before the table defaults changed
                                       "scaling": "standard", "numeric_encoding": "none"}


def _field_default(cls: type, name: str) -> Any:
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    return found.default_factory() if found.default is dataclasses.MISSING else found.default  # type: ignore[misc]


# The 2% held out is at least this many rows (at most the table default's 10%): a small table's
# validation metrics stay defined (both classes present) and say something.
MIN_VALID_ROWS = 50


def apply_text_defaults(config: RunConfig, explicit: set[str], rows: int | None = None) -> tuple[RunConfig, list[str]]:
    """TEXT_TRAIN_DEFAULTS where the config holds the table default and no flag/keyword set it."""
    sections: dict[str, Any] = {"train": config.train, "optim": config.train.optim, "model": config.model,
                                "data": config.data}
    classes = {"train": TrainConfig, "optim": OptimConfig, "model": TabularModelConfig, "data": DataConfig}
    changed: list[str] = []
    for name, value in TEXT_TRAIN_DEFAULTS.items():
        if name == "valid_fraction" and rows:
            value = round(min(_field_default(DataConfig, name), max(value, MIN_VALID_ROWS / rows)), 4)
        section = next(key for key, cls in classes.items() if name in {f.name for f in dataclasses.fields(cls)})
        current = getattr(sections[section], name)
        if name in explicit or current != _field_default(classes[section], name) or current == value:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else format(value, "g") if isinstance(value, float) else value
        changed.append(f"{name} {shown}")
        sections[section] = dataclasses.replace(sections[section], **{name: value})
    train = dataclasses.replace(sections["train"], optim=sections["optim"])
    return dataclasses.replace(config, train=train, model=sections["model"], data=sections["data"]), changed


def resolved_ngrams(config: RunConfig) -> int:
    """Word pairs help the bag of words (negation: "not good"); sequence encoders see word order already."""
    if config.data.text_ngrams is not None:
        return config.data.text_ngrams
    return 2 if config.model.text_encoder == "bag" else 1


def fit_kwargs(config: RunConfig) -> dict[str, Any]:
    data = config.data
    return {"text": data.text_columns, "max_tokens": data.max_tokens, "text_ngrams": resolved_ngrams(config),
            "min_freq": data.min_freq, "max_vocab": data.max_vocab, "char_ngrams": data.char_ngrams,
            "distinct_tokens": config.model.text_encoder == "bag",
            # The file's JSON goes into the schema (and so the bundle): predict and serve need no copy.
            "tokenizer": read_tokenizer(data.tokenizer) if data.tokenizer else None}


def model_args(config: RunConfig, schema: TableSchema) -> dict[str, Any]:
    dim = None
    if config.model.embeddings:
        dim = read_vectors(config.model.embeddings, schema.text[0].vocab)[2]
    return text_model_args(config.model, schema, dim)


def set_token_weights(model: nn.Module, schema: TableSchema) -> None:
    """The training split's IDF into the model's buffers (used by the "idf" bag weighting)."""
    with torch.no_grad():
        for index, column in enumerate(schema.text):
            if column.vocab.idf is not None:
                model.set_token_weights(index, column.vocab.idf)  # type: ignore[operator]


def load_pretrained(model: nn.Module, schema: TableSchema, path: str) -> list[str]:
    """Pretrained vectors into every text column's embedding, aligned by word; one coverage line each."""
    lines = []
    for index, column in enumerate(schema.text):
        vectors, found, _ = read_vectors(path, column.vocab)
        model.load_vectors(index, vectors, found)  # type: ignore[operator]
        words = len(column.vocab) - 2
        lines.append(f"embeddings: {int(found.sum()):,} of {words:,} vocabulary tokens of '{column.name}' found in {path}")
    return lines
