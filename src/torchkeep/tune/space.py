"""The search space of a study: `[tune.space]` in the run's TOML, checked against the settings a trial can take.

    [tune.space]
    lr = {loguniform = [1e-4, 1e-1]}
    dropout = {uniform = [0, 0.3]}
    hidden_sizes = {choice = ["256,128", "512,256"]}
    batch_size = {choice = [128, 512]}
    weight_decay = {loguniform = [1e-6, 1e-2]}
    ensemble_size = {randint = [1, 9]}        # integers from 1 to 8 (the upper end excluded)

Each name is a setting of a run (the keyword `torchkeep.train` takes); each value one distribution:
uniform / loguniform [low, high], randint [low, high), choice [values]. Comma lists ("256,128") become
lists of integers for the settings that take lists. The space is plain data here; Ray's objects are made
where the study starts (study.py), so a wrong space is one line before Ray is imported.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from torchkeep.config import DataConfig
from torchkeep.errors import ConfigError
from torchkeep.models.tabular import TabularModelConfig
from torchkeep.models.vision import VisionModelConfig
from torchkeep.training.loop import TrainConfig
from torchkeep.training.optim import OptimConfig

KINDS = ("uniform", "loguniform", "randint", "choice")

# Settings a study searches over: how a model learns and what it is, not where data or runs live, nor what
# the study itself fixes for every trial (the budget, the monitored metric, threads, devices, seeds of a run).
_DATA = ("scaling", "numeric_encoding", "numeric_bins", "min_level_count", "max_tokens", "text_ngrams", "min_freq",
         "max_vocab", "char_ngrams", "augment_pad", "augment_flip")
_NOT_SEARCHED = {"epochs", "monitor", "monitor_mode", "device", "threads", "log_every_steps", "deterministic",
                 "valid_every_steps", "valid_every_epoch", "restore_best", "optim", "transfer", "embedding_dims",
                 "embeddings"}
SETTABLE = tuple(sorted(
    {f.name for cls in (TabularModelConfig, VisionModelConfig, TrainConfig, OptimConfig) for f in dataclasses.fields(cls)}
    - _NOT_SEARCHED | set(_DATA)))
_LISTS = {f.name for cls in (TabularModelConfig, VisionModelConfig) for f in dataclasses.fields(cls)
          if str(f.type).startswith("list")}
assert set(_DATA) <= {f.name for f in dataclasses.fields(DataConfig)}

# When no space is given: what moves a table model's quality most, in ranges that stay fast.
DEFAULT_TABLE_SPACE: dict[str, dict[str, list[Any]]] = {
    "lr": {"loguniform": [3e-4, 1e-2]},
    "weight_decay": {"loguniform": [1e-5, 1e-1]},
    "dropout": {"uniform": [0.0, 0.3]},
    "hidden_sizes": {"choice": ["128,64", "256,128", "512,256"]},
}
DEFAULT_IMAGE_SPACE: dict[str, dict[str, list[Any]]] = {
    "lr": {"loguniform": [3e-4, 1e-2]},
    "weight_decay": {"loguniform": [1e-5, 1e-1]},
    "dropout": {"uniform": [0.0, 0.3]},
}


@dataclass(frozen=True)
class Dimension:
    """One searched setting: `kind` (uniform, loguniform, randint, choice) over `values`."""

    name: str
    kind: str
    values: tuple[Any, ...]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name} in {list(self.values)}"
        return f"{self.name} {self.kind} [{self.values[0]}, {self.values[1]}{')' if self.kind == 'randint' else ']'}"


def parse_space(table: dict[str, Any] | None, *, images: bool = False, where: str = "[tune.space]") -> list[Dimension]:
    """The dimensions of a `[tune.space]` table (None or empty: the default space for the kind of data)."""
    if not table:
        table = DEFAULT_IMAGE_SPACE if images else DEFAULT_TABLE_SPACE
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of settings, e.g. lr = {{loguniform = [1e-4, 1e-1]}}")
    return [_dimension(name, spec, where) for name, spec in table.items()]


def _dimension(name: str, spec: Any, where: str) -> Dimension:
    if name not in SETTABLE:
        raise ConfigError(f"{where}: '{name}' is not a setting a study can search; searchable: {', '.join(SETTABLE)}")
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: {name} must be one of {', '.join(f'{{{k} = [...]}}' for k in KINDS)}"
                          f" (got {spec!r})")
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where}: {name} = {{{kind} = ...}} needs a non-empty list (got {values!r})")
    if kind == "choice":
        return Dimension(name, kind, tuple(_list_setting(name, v, where) for v in values))
    if len(values) != 2 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"{where}: {name} = {{{kind} = [low, high]}} takes two numbers (got {values!r})")
    low, high = values
    if kind == "randint" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{where}: {name} = {{randint = [low, high]}} takes integers (got {values!r})")
    if not low < high or (kind == "randint" and high - low < 1):
        raise ConfigError(f"{where}: {name} = {{{kind} = [{low}, {high}]}} is an empty range; the first number must"
                          " be below the second")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: {name} = {{loguniform = [{low}, {high}]}} needs numbers above 0")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{where}: {name}: the range must be finite (got {values!r})")
    return Dimension(name, kind, (low, high))


def _list_setting(name: str, value: Any, where: str) -> Any:
    """"256,128" -> [256, 128] for the settings that take lists of integers; other values as they are."""
    if name not in _LISTS:
        return value
    if isinstance(value, list):
        return value
    try:
        return [int(part) for part in str(value).split(",")]
    except ValueError:
        raise ConfigError(f"{where}: {name} choices are comma lists of integers such as \"256,128\""
                          f" (got {value!r})") from None


def to_ray(dimensions: list[Dimension]) -> dict[str, Any]:
    """Ray Tune's search space for the dimensions (ray imported: the caller has checked it is there)."""
    from ray import tune

    space: dict[str, Any] = {}
    for d in dimensions:
        match d.kind:
            case "uniform":
                space[d.name] = tune.uniform(*d.values)
            case "loguniform":
                space[d.name] = tune.loguniform(*d.values)
            case "randint":
                space[d.name] = tune.randint(*d.values)
            case "choice":
                space[d.name] = tune.choice(list(d.values))
            case _:
                raise AssertionError(d.kind)
    return space
