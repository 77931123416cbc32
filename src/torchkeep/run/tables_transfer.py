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
from torchkeep.training.transfer import Adapt, Pretrained

PREFIX = "embeddings"
# The first layer's tensors and the dimension along which they read the inputs: one MLP's Linear
# ([out, in]), an ensemble's shared weight ([in, out]) and its members' input scalings ([k, in]).
FIRST_LAYER_INPUTS = (("mlp.0.weight", 1), ("mlp.layers.0.weight", 0), ("mlp.layers.0.r", 1))


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


def _inputs(schema: TableSchema, dims: list[int]) -> dict[tuple[str, str], tuple[int, int]]:
    """Where each input sits in the first layer's input: (part, column) -> (offset, width)."""
    layout, offset = {}, 0
    for column, dim in zip(schema.categorical, dims, strict=True):
        layout["embedding", column.name], offset = (offset, dim), offset + dim
    for column in schema.continuous:
        values = column.width - column.missing_indicator  # the scaled value and its bins (edges differ: skipped)
        layout["value", column.name], offset = (offset, values), offset + values
        if column.missing_indicator:
            layout["missing", column.name], offset = (offset, 1), offset + 1
    return layout


def _copy_inputs(source: torch.Tensor, fresh: torch.Tensor, source_layout: dict, layout: dict, dim: int,
                 shift: int = 0) -> tuple[torch.Tensor, int]:
    """`fresh` with the slices (along `dim`) of inputs both layouts have copied from `source`."""
    out, copied = fresh.detach().clone(), 0
    for key, (offset, width) in layout.items():
        if key in source_layout and source_layout[key][1] == width:
            start = source_layout[key][0] - shift
            out.narrow(dim, offset - shift, width).copy_(source.narrow(dim, start, width))
            copied += 1
    return out, copied


def level_aligner(schema: TableSchema) -> Adapt:
    """An `adapt` for `load_pretrained`: the source's embedding rows in this schema's level order, and
    the first layer's input columns (and the continuous BatchNorm) in this schema's column order."""

    def adapt(pretrained: Pretrained, model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
        columns = _source_columns(pretrained)
        old_schema = source_schema(pretrained)
        if not columns or old_schema is None:
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
            rows = state[key].detach().clone()
            if source.shape[1] != rows.shape[1]:
                weights[key] = source  # reported as skipped: the sizes differ
                continue
            position = {level: i + 1 for i, level in enumerate(source_levels)}
            pairs = [(i + 1, position[level]) for i, level in enumerate(column.levels) if level in position]
            if model.get_submodule(f"{PREFIX}.{index}").padding_idx != 0:  # a fixed zero row stays zero
                pairs.append((0, 0))
            if pairs:
                target_rows, source_rows = (torch.tensor(side) for side in zip(*pairs, strict=True))
                rows[target_rows] = source[source_rows].to(rows.dtype)
            weights[key] = rows
            notes.append(f"{column.name} {len(position.keys() & set(column.levels))}/{len(column.levels)}")
        lines = ["embedding rows copied by level (levels known to both runs / levels): " + ", ".join(notes)] if notes else []
        # The first layer reads [embeddings..., continuous inputs...]: its weight columns follow the
        # columns by name, wherever a changed target or column set moved them.
        try:
            source_dims = [int(pretrained.weights[f"{PREFIX}.{i}.weight"].shape[1]) for i in range(len(old_schema.categorical))]
        except KeyError:
            return weights, lines
        dims = [int(state[f"{PREFIX}.{i}.weight"].shape[1]) for i in range(len(schema.categorical))]
        source_layout, layout = _inputs(old_schema, source_dims), _inputs(schema, dims)
        width = sum(w for _, w in source_layout.values())
        for key, dim in FIRST_LAYER_INPUTS:
            first = weights.get(key)
            if first is None or key not in state or first.dim() != state[key].dim() or first.shape[dim] != width:
                continue
            if any(a != b for i, (a, b) in enumerate(zip(first.shape, state[key].shape)) if i != dim):
                continue
            weights[key], copied = _copy_inputs(first, state[key], source_layout, layout, dim=dim)
            if key != "mlp.layers.0.r":  # one line per layer
                lines.append(f"first layer: input columns of {copied} of {len(layout)} inputs from the pretrained run")
        # The continuous BatchNorm is per continuous input: same mapping, offsets after the embeddings.
        source_shift, shift = sum(source_dims), sum(dims)
        source_numbers = {k: (o - source_shift, w) for k, (o, w) in source_layout.items() if k[0] != "embedding"}
        numbers = {k: (o - shift, w) for k, (o, w) in layout.items() if k[0] != "embedding"}
        for name in ("weight", "bias", "running_mean", "running_var"):
            key = f"continuous_norm.{name}"
            if key in weights and key in state and weights[key].shape[0] == len(source_numbers):
                weights[key] = _copy_inputs(weights[key], state[key], source_numbers, numbers, dim=0)[0]
        return weights, lines

    return adapt
