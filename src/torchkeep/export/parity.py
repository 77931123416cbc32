"""The parity check every export passes: the exported model against the eager one, on real rows.

Real rows (not random tensors) exercise what serving will: real category codes, including 0 for
null / unseen, and continuous values at their real scale. They come from `--data`, else from the
data the run was trained on (its config.json), else the export stops and asks for `--data`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl
import torch
from torch import nn

from torchkeep.data.builtin import get_example
from torchkeep.data.io import read_table
from torchkeep.data.table import TableSchema
from torchkeep.errors import CheckpointError, DataError, StorageError
from torchkeep.export.formats import input_names
from torchkeep.storage import open_storage

TOLERANCE = 1e-5
MAX_ROWS = 10_000


@dataclass(kw_only=True)
class Parity:
    rows: int
    max_abs_diff: float
    tolerance: float
    data: str

    def describe(self) -> str:
        return (f"parity: max abs diff {self.max_abs_diff:.3g} vs the eager model on {self.rows:,} rows of"
                f" {self.data} (tolerance {self.tolerance:g})")


def _run_data(run_dir: str) -> str | None:
    """The table a run was trained on, from its config.json (a path, or a built-in example)."""
    try:
        config = json.loads(open_storage(run_dir).read("config.json"))["data"]
    except (StorageError, ValueError, KeyError, TypeError):
        return None
    if config.get("path"):
        return config["path"]
    return get_example(config["example"]).path if config.get("example") else None


def parity_data(source: str, data: str | None) -> str:
    """`data`, else the training data of the run `source` is (or whose `bundle/` it is)."""
    if data:
        return data
    stripped = source.rstrip("/")
    parent, _, last = stripped.rpartition("/")
    candidates = [stripped] + ([parent or "."] if last == "bundle" else [])
    for run_dir in candidates:
        if found := _run_data(run_dir):
            return found
    raise DataError(f"{source}: the parity check needs real rows and this is not a run that names its data;"
                    " pass --data PATH (a table with the model's columns)")


def parity_inputs(schema: TableSchema, data: str) -> dict[str, torch.Tensor]:
    """Up to MAX_ROWS rows of `data`, encoded by the model's own schema (the target, if present, is ignored)."""
    try:
        frame: pl.DataFrame = read_table(data)
    except DataError as error:
        raise DataError(f"{error} (rows for the parity check; pass another table with --data)") from None
    return schema.transform(frame.head(MAX_ROWS), with_target=False, source=data)


def check_parity(eager: nn.Module, exported: Callable[..., torch.Tensor],
                 inputs: dict[str, torch.Tensor], *, what: str, data: str) -> Parity:
    """Max abs difference of the outputs on `inputs`; a CheckpointError when it exceeds TOLERANCE."""
    ordered = tuple(inputs[name] for name in input_names(inputs))
    with torch.no_grad():
        expected = eager.eval()(*ordered)
        found = torch.as_tensor(exported(*ordered))
    return compare_outputs(found, expected, what=what, rows=len(ordered[0]), data=data)


def compare_outputs(found: torch.Tensor, expected: torch.Tensor, *, what: str, rows: int, data: str,
                    tolerance: float = TOLERANCE, unit: str = "rows") -> Parity:
    """An export's outputs against the eager model's: same shape, max abs diff within tolerance."""
    if found.shape != expected.shape:
        raise CheckpointError(f"{what}: parity check failed: output shape {tuple(found.shape)} on {rows} {unit},"
                              f" the eager model gives {tuple(expected.shape)}")
    difference = (found.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    if not difference <= tolerance:  # also catches NaN
        raise CheckpointError(f"{what}: parity check failed: max abs diff {difference:.3g} vs the eager model on"
                              f" {rows} {unit} (tolerance {tolerance:g})")
    return Parity(rows=rows, max_abs_diff=difference, tolerance=tolerance, data=data)
