"""Flat keyword settings (`epochs=5, lr=1e-3`) onto the RunConfig section that owns each name."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from torchkeep.config import RunConfig
from torchkeep.data.table import TableSchema
from torchkeep.errors import ConfigError
from torchkeep.run.tables_transfer import embedding_dims
from torchkeep.training.metrics import DEFAULT_MONITOR
from torchkeep.training.transfer import Pretrained, read_pretrained


def override(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """`config` with each override applied to whichever section owns the name."""
    sections = {"": config, "data": config.data, "model": config.model, "train": config.train,
                "optim": config.train.optim, "transfer": config.train.transfer, "checkpoint": config.checkpoint,
                "track": config.track, "vision": config.vision}  # vision last: its dropout / hidden_sizes go to [model] for tables
    updates: dict[str, dict[str, Any]] = {name: {} for name in sections}
    for key, value in overrides.items():
        owners = [name for name, section in sections.items()
                  if key in {f.name for f in dataclasses.fields(section)} and key not in sections]
        if not owners:
            raise ConfigError(f"unknown setting '{key}'")
        updates[owners[0]][key] = value
    train = dataclasses.replace(config.train, optim=dataclasses.replace(config.train.optim, **updates["optim"]),
                                transfer=dataclasses.replace(config.train.transfer, **updates["transfer"]),
                                **updates["train"])
    return dataclasses.replace(
        config, data=dataclasses.replace(config.data, **updates["data"]),
        model=dataclasses.replace(config.model, **updates["model"]), train=train,
        checkpoint=dataclasses.replace(config.checkpoint, **updates["checkpoint"]),
        track=dataclasses.replace(config.track, **updates["track"]),
        vision=dataclasses.replace(config.vision, **updates["vision"]), **updates[""],
    )


def with_monitor(config: RunConfig, task: str) -> RunConfig:
    """The task's default monitored metric (and its mode) where the config names none."""
    monitor, mode = DEFAULT_MONITOR[task]
    return dataclasses.replace(config, train=dataclasses.replace(
        config.train, monitor=config.train.monitor or monitor,
        monitor_mode=config.train.monitor_mode or (mode if not config.train.monitor else None)))


def read_init_from(config: RunConfig, schema: Any = None) -> tuple[Pretrained | None, RunConfig]:
    """The `init_from` weights, read before a run makes its directory, and the config with the path made
    absolute (a resume reads it again from any working directory); for a table run (`schema` a
    TableSchema) also with the pretrained embedding sizes kept, so the layers after them load too."""
    source = config.train.transfer.init_from
    if source is None:
        return None, config
    if "://" not in source:
        source = os.path.abspath(source)
    pretrained = read_pretrained(source)
    transfer = dataclasses.replace(config.train.transfer, init_from=source)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, transfer=transfer))
    if isinstance(schema, TableSchema):
        config = dataclasses.replace(config, model=dataclasses.replace(
            config.model, embedding_dims=embedding_dims(pretrained, config.model, schema)))
    return pretrained, config


def tracker_objects(overrides: dict[str, Any]) -> list[Any]:
    """The tracker objects among `overrides["trackers"]` (names stay there: the config's), taken out."""
    given = overrides.get("trackers")
    if not isinstance(given, list | tuple) or all(isinstance(t, str) for t in given):
        return []
    names = [t for t in given if isinstance(t, str)]
    if names:
        overrides["trackers"] = names
    else:
        del overrides["trackers"]
    return [t for t in given if not isinstance(t, str)]
