"""Transfer learning between table models: embedding rows follow category levels, not positions.

Two runs fit their vocabularies on different rows, so index 7 of `carrier` may be "UA" in one and
"WN" in the other, and a column may have more levels in one. Copying an embedding table by name
and shape would hand every level another level's vector. Here, for each categorical column that
both schemas have (by column name), the rows of levels both know are copied by level; levels new to
this run keep their fresh initialisation, and index 0 (null / unseen) keeps the pretrained one.

Columns that both runs have also keep the pretrained run's embedding sizes (unless the config names
a size), so that the layers after the embeddings have the same shapes and load too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from torchkeep.data.table import TableSchema
from torchkeep.models.tabular import TabularModelConfig
from torchkeep.train.transfer import Adapt, Pretrained

PREFIX = "embeddings"


def source_schema(pretrained: Pretrained) -> TableSchema | None:
    preprocessor = pretrained.preprocessor or {}
    if preprocessor.get("kind") != "table" or "schema" not in preprocessor:
        return None
    return TableSchema.from_dict(preprocessor["schema"])


def _source_columns(pretrained: Pretrained) -> dict[str, tuple[int, list[Any]]]:
    """column name -> (index in the pretrained model's embeddings, levels)."""
    schema = source_schema(pretrained)
    if schema is None:
        return {}
    return {column.name: (index, column.levels) for index, column in enumerate(schema.categorical)
            if f"{PREFIX}.{index}.weight" in pretrained.weights}


def embedding_dims(pretrained: Pretrained, config: TabularModelConfig, schema: TableSchema) -> dict[str, int]:
    """Per-column embedding sizes for a new model: the pretrained ones for shared columns, the config's first."""
    dims = {}
    columns = _source_columns(pretrained)
    for column in schema.categorical:
        if column.name in columns and column.name not in config.embedding_dims:
            index = columns[column.name][0]
            dims[column.name] = int(pretrained.weights[f"{PREFIX}.{index}.weight"].shape[1])
    return {**dims, **config.embedding_dims}


def level_aligner(schema: TableSchema) -> Adapt:
    """An `adapt` for `load_pretrained`: rewrites the source's embedding tables into this schema's order."""

    def adapt(pretrained: Pretrained, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
        columns = _source_columns(pretrained)
        if not columns:
            return pretrained.weights, []
        state = model.state_dict()
        weights = {k: v for k, v in pretrained.weights.items() if not k.startswith(f"{PREFIX}.")}
        notes = []
        for index, column in enumerate(schema.categorical):
            key = f"{PREFIX}.{index}.weight"
            if column.name not in columns or key not in state:
                continue
            source_index, source_levels = columns[column.name]
            source = pretrained.weights[f"{PREFIX}.{source_index}.weight"]
            fresh = state[key]
            if source.shape[1] != fresh.shape[1]:
                weights[key] = source  # reported as skipped: the sizes differ
                continue
            rows = fresh.detach().clone()
            position = {level: i + 1 for i, level in enumerate(source_levels)}
            pairs = [(i + 1, position[level]) for i, level in enumerate(column.levels) if level in position]
            if model.get_submodule(f"{PREFIX}.{index}").padding_idx != 0:  # a fixed zero row stays zero
                pairs.append((0, 0))
            target_rows, source_rows = (torch.tensor(side) for side in zip(*pairs, strict=True))
            rows[target_rows] = source[source_rows].to(rows.dtype)
            weights[key] = rows
            notes.append(f"{column.name} {len(position.keys() & set(column.levels))}/{len(column.levels)}")
        lines = ["embedding rows copied by level (levels known to both runs / levels): " + ", ".join(notes)] if notes else []
        return weights, lines

    return adapt
