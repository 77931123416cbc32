"""What a run with text columns does differently: its training defaults, the model's arguments and
pretrained word vectors. Kept apart from api.py so that tables without text never meet it."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from torchkeep.config import RunConfig
from torchkeep.data.table import TableSchema
from torchkeep.data.text import read_tokenizer, read_vectors
from torchkeep.models.build import text_model_args
from torchkeep.models.tabular import TabularModelConfig
from torchkeep.train.loop import TrainConfig
from torchkeep.train.optim import OptimConfig

ARCHITECTURE = "text_table_mlp"

# Training defaults of a run with text columns, replacing the table defaults (3 epochs of batch
# 1024 are a dozen optimizer steps on a few thousand reviews). Chosen on a validation split of
# small_fine_foods' training_data (bench/text.py); a setting given explicitly is kept.
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "hidden_sizes": [32]}


def _field_default(cls: type, name: str) -> Any:
    found = next(f for f in dataclasses.fields(cls) if f.name == name)
    return found.default_factory() if found.default is dataclasses.MISSING else found.default  # type: ignore[misc]


def apply_text_defaults(config: RunConfig, explicit: set[str]) -> tuple[RunConfig, list[str]]:
    """TEXT_TRAIN_DEFAULTS where the config holds the table default and no flag/keyword set it."""
    train, optim, model = config.train, config.train.optim, config.model
    changed: list[str] = []
    for name, value in TEXT_TRAIN_DEFAULTS.items():
        owner, cls = {"lr": (optim, OptimConfig), "hidden_sizes": (model, TabularModelConfig)}.get(name, (train, TrainConfig))
        if name in explicit or getattr(owner, name) != _field_default(cls, name):
            continue
        changed.append(f"{name} {','.join(map(str, value)) if isinstance(value, list) else format(value, 'g')}")
        if owner is optim:
            optim = dataclasses.replace(optim, **{name: value})
        elif owner is model:
            model = dataclasses.replace(model, **{name: value})
        else:
            train = dataclasses.replace(train, **{name: value})
    return dataclasses.replace(config, train=dataclasses.replace(train, optim=optim), model=model), changed


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
