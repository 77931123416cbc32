"""Table runs (and tables with text columns): start one, or reopen one to resume.

Reading the table, dropping rows without a target, the seeded split, fitting the TableSchema on the
training split, the step budget, and the files a resume trusts. Both splits are transformed before
anything is written: bad data leaves no run directory behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import polars as pl

from torchkeep.config import RunConfig
from torchkeep.data.builtin import get_example
from torchkeep.data.io import as_frame, read_table
from torchkeep.data.parquet import ParquetDataset, dataset_name
from torchkeep.data.table import TableSchema, check_frame
from torchkeep.errors import ConfigError, DataError
from torchkeep.models.build import build_model, tabular_model_args
from torchkeep.run import text
from torchkeep.run.rundir import RunDir, fingerprint, split_index
from torchkeep.run.session import Setup
from torchkeep.run.settings import override, read_init_from, with_monitor
from torchkeep.run.tables_transfer import level_aligner
from torchkeep.training.budget import table_budget
from torchkeep.training.loop import TrainConfig, check_device
from torchkeep.training.progress import Progress
from torchkeep.training.transfer import check_transfer

log = logging.getLogger("torchkeep")

ARCHITECTURE = "entity_embedding_mlp"


def load_data(config: RunConfig, data: Any, dataset: ParquetDataset | None = None) -> tuple[pl.DataFrame, str, RunConfig]:
    """The whole table, a short name for the run directory, and the config with example defaults filled in.
    `dataset`: the parquet dataset at the config's path, already opened (read whole here)."""
    if data is not None and not isinstance(data, str):
        return as_frame(data), "frame", config
    path = data or config.data.path
    if path is None:
        example = get_example(config.data.example or "flights")
        data_config = dataclasses.replace(config.data, example=example.name, target=config.data.target or example.target,
                                          text_columns=config.data.text_columns or list(example.text_columns))
        return read_table(example.path), example.name, dataclasses.replace(config, data=data_config)
    if "://" not in path:
        path = os.path.abspath(path)  # a resumed run finds its data from any working directory
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=path))
    if dataset is not None:
        frame = dataset.read_all(skip_bad_files=config.data.skip_bad_files)
        if dataset.skipped:
            log.warning("%s: left out %d file(s) that cannot be read: %s", path, len(dataset.skipped),
                        ", ".join(dataset.skipped[:5]) + (", ..." if len(dataset.skipped) > 5 else ""))
        return frame, dataset_name(path), config
    return read_table(path, skip_bad_files=config.data.skip_bad_files), dataset_name(path), config


def table_fingerprint(frame: pl.DataFrame) -> dict[str, Any]:
    return fingerprint(frame.height, frame.columns, int(frame.hash_rows(seed=0).sum() or 0))


def split(frame: pl.DataFrame, config: RunConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(training rows, validation rows): the --valid table, or the seeded split of the run."""
    if config.data.valid_path:
        return frame, read_table(config.data.valid_path)
    train_index, valid_index = split_index(frame.height, seed=config.train.seed, valid_fraction=config.data.valid_fraction,
                                           what=config.data.path or "data", unit="row")
    return frame[train_index], frame[valid_index]


def drop_null_targets(frame: pl.DataFrame, target: str | None) -> tuple[pl.DataFrame, int]:
    """The rows with a target, and how many had none (a row without a label teaches nothing)."""
    if target is None or target not in frame.columns:
        return frame, 0
    nulls = frame.get_column(target).null_count()
    if nulls == frame.height:
        raise DataError(f"target column '{target}' is null in every row; nothing to learn")
    return (frame.filter(pl.col(target).is_not_null()), nulls) if nulls else (frame, 0)


def apply_budget(config: RunConfig, explicit: set[str], rows: int,
                 steps: int | None = None) -> tuple[RunConfig, str | None]:
    """The step budget of training/budget.py for what the user left unset: batch size, epochs (from the
    batch, or from the user's `steps`), and with many short epochs validation and checkpoints by steps
    and early stopping."""
    if steps is not None and "epochs" in explicit:
        raise ConfigError("--steps and --epochs both set how long a run trains; give one of them")
    defaults, chosen = TrainConfig(), explicit & {"epochs", "batch_size"}
    set_in_code = (config.train.epochs, config.train.batch_size) != (defaults.epochs, defaults.batch_size)
    if steps is None and (chosen == {"epochs", "batch_size"} or (not chosen and set_in_code)):
        return config, None  # the user's budget (flags, TOML, or a RunConfig built in Python)
    budget = table_budget(rows, batch_size=config.train.batch_size if "batch_size" in explicit else None,
                          members=config.model.ensemble_size, steps=steps)
    if "threads" in explicit:
        budget = dataclasses.replace(budget, threads=None)
    train_updates: dict[str, Any] = {"batch_size": budget.batch_size}
    if budget.threads is not None:
        train_updates["threads"] = budget.threads
    if "epochs" not in explicit:
        train_updates["epochs"] = budget.epochs
        if "early_stopping_patience" not in explicit:
            train_updates["early_stopping_patience"] = budget.early_stopping_patience
        if "anneal_on_stall" not in explicit:
            train_updates["anneal_on_stall"] = True
        if budget.valid_every_steps and not explicit & {"valid_every_steps", "valid_every_epoch"}:
            train_updates.update(valid_every_steps=budget.valid_every_steps, valid_every_epoch=False)
    checkpoint = config.checkpoint
    if train_updates.get("valid_every_epoch") is False and not explicit & {"every_steps", "every_epoch"}:
        checkpoint = dataclasses.replace(checkpoint, every_steps=budget.valid_every_steps, every_epoch=False)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train_updates), checkpoint=checkpoint)
    return config, budget.describe(rows) if "epochs" not in explicit else None


def transform_splits(schema: TableSchema, train_frame: pl.DataFrame, valid_frame: pl.DataFrame,
                     config: RunConfig, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both splits as tensors for BatchLoader (text columns packed: batches padded to their own longest text)."""
    return (
        schema.transform(train_frame, source=f"{source} (training split)", packed_text=True),
        schema.transform(valid_frame, source=config.data.valid_path or f"{source} (validation split)", packed_text=True),
    )


def reopen(run: RunDir, data: Any) -> Setup:
    """A table run to resume: its saved config, schema and model, the same data (checked), the same split."""
    config = RunConfig.from_dict(run.read("config.json"), source=f"{run.path}/config.json")
    frame, name, config = load_data(config, data)
    frame, _ = drop_null_targets(frame, config.data.target)
    saved, found = run.read("run.json")["data"], table_fingerprint(frame)
    if (saved["rows"], saved["columns"]) != (found["rows"], found["columns"]):
        raise DataError(f"{config.data.path or 'data'}: changed since the run started "
                        f"({saved['rows']} rows then, {found['rows']} now); resume needs the same data")
    if saved["hash"] != found["hash"]:
        log.warning("the data's content hash differs from when the run started; resuming anyway")
    schema = TableSchema.from_dict(run.read("schema.json"))
    spec = run.read("model.json")
    train_frame, valid_frame = split(frame, config)
    tensors = transform_splits(schema, train_frame, valid_frame, config, config.data.path or name)
    return Setup(run, config, schema, spec["architecture"], spec["args"], *tensors)


def start(data: Any, config: RunConfig, overrides: dict[str, Any], progress: Progress,
          steps: int | None = None, dataset: ParquetDataset | None = None) -> Setup:
    """A new table run: read, split, fit, check, then write the run's files (run.json last). `dataset`: the
    parquet dataset at the data path, already opened, to read whole."""
    config = override(config, overrides)
    frame, name, config = load_data(config, data, dataset)
    if config.data.text_columns:
        config, changed = text.apply_text_defaults(config, set(overrides) | config.explicit, rows=frame.height)
        if changed:
            progress.message(f"text columns: training defaults {', '.join(changed)}")
    if config.data.target is None:
        raise ConfigError("no target column: pass --target COLUMN (or target= in Python, [data] target in TOML)")
    run = RunDir.new(config.run_dir, name)
    config = dataclasses.replace(config, run_dir=run.path)
    source = config.data.path or name
    frame, null_targets = drop_null_targets(frame, config.data.target)
    check_frame(frame, config.data.target, source)
    train_frame, valid_frame = split(frame, config)
    schema = TableSchema.fit(
        train_frame, target=config.data.target, task=config.data.task, categorical=config.data.categorical,
        continuous=config.data.continuous, drop=config.data.drop, max_integer_levels=config.data.max_integer_levels,
        standardize_target=config.data.standardize_target, source=f"{source} (training split)",
        scaling=config.data.scaling, numeric_encoding=config.data.numeric_encoding,
        numeric_bins=config.data.numeric_bins, min_level_count=config.data.min_level_count,
        integer_levels_as_numbers=config.data.integer_levels_as_numbers,
        **(text.fit_kwargs(config) if config.data.text_columns else {}),
    )
    if null_targets:
        schema.notes.insert(0, {"column": config.data.target, "action": "rows dropped",
                                "reason": f"{null_targets:,} row(s) with a null target"})
    for line in schema.note_lines():
        log.warning("%s: %s", source, line)
    budget_line = None
    if not schema.text:
        config, budget_line = apply_budget(config, set(overrides) | config.explicit, train_frame.height, steps)
    assert schema.target is not None
    config = with_monitor(config, schema.target.task)
    pretrained, config = read_init_from(config, schema)
    architecture = text.ARCHITECTURE if schema.text else ARCHITECTURE
    model_args = text.model_args(config, schema) if schema.text else tabular_model_args(config.model, schema, config.data.numeric_encoding)
    # Transformed before anything is written: bad data leaves no run directory behind.
    tensors = transform_splits(schema, train_frame, valid_frame, config, source)
    # Also checked before: freeze patterns, and what init_from loads (on a scratch model).
    transfer_report = check_transfer(config.train.transfer, lambda: build_model(architecture, model_args),
                                     pretrained, level_aligner(schema) if not schema.text else None)
    check_device(config.train.device)
    if budget_line:
        progress.message(budget_line)
    run.write_setup(config=config.to_dict(), schema=schema.to_dict(), transfer=transfer_report,
                    model={"architecture": architecture, "args": model_args}, data=table_fingerprint(frame))
    return Setup(run, config, schema, architecture, model_args, *tensors, pretrained=pretrained)
