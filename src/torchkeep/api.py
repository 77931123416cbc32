"""The Python API that the CLI mirrors: train (and resume) a run, load it, predict and evaluate.

A run directory holds:
    run.json        status, data fingerprint, timings, final metrics
    config.json     the resolved RunConfig
    schema.json     the TableSchema fitted on the training split
    model.json      architecture + constructor arguments
    metrics.jsonl   one JSON object per logged event
    checkpoints/    step-NNNNNNNNN/ (safetensors + state.json + MANIFEST.json), LATEST
    bundle/         the final model for predict / serve (written when training ends)
Everything a resume trusts is written atomically before the first step, or committed by a manifest.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep import image_api, text_setup
from torchkeep.checkpoint import Checkpointer
from torchkeep.config import RunConfig
from torchkeep.data.builtin import get_example
from torchkeep.data.io import as_frame, read_table
from torchkeep.data.loader import BatchLoader
from torchkeep.data.table import TableSchema, check_frame
from torchkeep.data.text import check_texts
from torchkeep.errors import CheckpointError, ConfigError, DataError
from torchkeep.export.bundle import read_bundle, schema_from_dict, write_bundle
from torchkeep.models.build import build_model, loss_for_task, tabular_model_args
from torchkeep.models.tabular_transfer import level_aligner, read_init_from
from torchkeep.models.vision_transfer import transfer_adapter
from torchkeep.storage import open_storage
from torchkeep.tensor_predictor import TensorPredictor, is_own_run, load_own_model, load_unfinished
from torchkeep.track import Tracker, build_trackers, close_trackers
from torchkeep.training.budget import table_budget
from torchkeep.training.loop import TrainConfig, check_device, fit, predict_outputs, resolve_device
from torchkeep.training.metrics import DEFAULT_MONITOR, metrics_for_task
from torchkeep.training.progress import Progress
from torchkeep.training.state import TrainState, seed_everything
from torchkeep.training.transfer import Pretrained, check_transfer, load_pretrained

log = logging.getLogger("torchkeep")

ARCHITECTURE = "entity_embedding_mlp"
EVAL_BATCH_ROWS = 65_536
EVAL_BATCH_IMAGES = 256  # a CNN's activations are ~100x an image's bytes: 64k images at once would need GBs


def _eval_rows(tensors: dict[str, torch.Tensor]) -> int:
    return EVAL_BATCH_IMAGES if "image" in tensors else EVAL_BATCH_ROWS


@dataclass
class RunResult:
    run_dir: str
    valid: dict[str, float]
    state: TrainState
    bundle: str


def _override(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Flat keyword overrides (`epochs=5, lr=1e-3`) applied to whichever section owns the name."""
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


def _load_data(config: RunConfig, data: Any) -> tuple[pl.DataFrame, str, RunConfig]:
    """The whole table, a short name for the run directory, and the config with example defaults filled in."""
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
    return read_table(path), Path(path).stem, config


def _split(frame: pl.DataFrame, config: RunConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    if config.data.valid_path:
        return frame, read_table(config.data.valid_path)
    if frame.height < 2:
        raise DataError(f"{config.data.path or 'data'}: {frame.height} row(s) cannot be split into training and validation")
    order = np.random.default_rng(config.train.seed).permutation(frame.height)
    n_valid = max(1, round(frame.height * config.data.valid_fraction))
    return frame[order[n_valid:]], frame[order[:n_valid]]


def _apply_budget(config: RunConfig, explicit: set[str], rows: int) -> tuple[RunConfig, str | None]:
    """The step budget of training/budget.py for what the user left unset: batch size, epochs (from the
    batch), and with many short epochs validation and checkpoints by steps and early stopping."""
    defaults, chosen = TrainConfig(), explicit & {"epochs", "batch_size"}
    set_in_code = (config.train.epochs, config.train.batch_size) != (defaults.epochs, defaults.batch_size)
    if chosen == {"epochs", "batch_size"} or (not chosen and set_in_code):
        return config, None  # the user's budget (flags, TOML, or a RunConfig built in Python)
    budget = table_budget(rows, batch_size=config.train.batch_size if "batch_size" in explicit else None)
    train_updates: dict[str, Any] = {"batch_size": budget.batch_size}
    if "epochs" not in explicit:
        train_updates["epochs"] = budget.epochs
        if "early_stopping_patience" not in explicit:
            train_updates["early_stopping_patience"] = budget.early_stopping_patience
        if budget.valid_every_steps and not explicit & {"valid_every_steps", "valid_every_epoch"}:
            train_updates.update(valid_every_steps=budget.valid_every_steps, valid_every_epoch=False)
    checkpoint = config.checkpoint
    if train_updates.get("valid_every_epoch") is False and not explicit & {"every_steps", "every_epoch"}:
        checkpoint = dataclasses.replace(checkpoint, every_steps=budget.valid_every_steps, every_epoch=False)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **train_updates), checkpoint=checkpoint)
    return config, budget.describe(rows) if "epochs" not in explicit else None


def _extend(storage: Any, run_dir: str, config: RunConfig, epochs: int, progress: Progress) -> RunConfig:
    """A resumed run's config with a new epoch budget, saved; the loop rebuilds its schedule for it."""
    done = 0
    latest = Checkpointer(run_dir, async_save=False).list()
    complete = [info for info in latest if info.status == "complete"]
    if complete:
        done = int(complete[-1].epoch or 0)
    if epochs <= done:
        raise ConfigError(f"{run_dir}: the run has trained {done} epoch(s); --epochs {epochs} must be more to extend it")
    if epochs != config.train.epochs:
        progress.message(f"extending {run_dir} from {config.train.epochs} to {epochs} epochs")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    _write_json(storage, "config.json", config.to_dict())
    return config


def _drop_null_targets(frame: pl.DataFrame, target: str | None) -> tuple[pl.DataFrame, int]:
    """The rows with a target, and how many had none (a row without a label teaches nothing)."""
    if target is None or target not in frame.columns:
        return frame, 0
    nulls = frame.get_column(target).null_count()
    if nulls == frame.height:
        raise DataError(f"target column '{target}' is null in every row; nothing to learn")
    return (frame.filter(pl.col(target).is_not_null()), nulls) if nulls else (frame, 0)


def _transform_splits(schema: TableSchema, train_frame: pl.DataFrame, valid_frame: pl.DataFrame,
                      config: RunConfig, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both splits as tensors for BatchLoader (text columns packed: batches padded to their own longest text)."""
    return (
        schema.transform(train_frame, source=f"{source} (training split)", packed_text=True),
        schema.transform(valid_frame, source=config.data.valid_path or f"{source} (validation split)", packed_text=True),
    )


def _fingerprint(frame: pl.DataFrame) -> dict[str, Any]:
    return {"rows": frame.height, "columns": frame.columns, "hash": int(frame.hash_rows(seed=0).sum() or 0)}


def _write_json(storage: Any, key: str, value: Any) -> None:
    storage.write(key, json.dumps(value, indent=1, default=str).encode())


def _read_json(storage: Any, key: str, run_dir: str) -> Any:
    if not storage.exists(key):  # a missing bucket or unreadable store raises its own error here
        raise CheckpointError(f"{run_dir}: not a torchkeep run (no {key})")
    try:
        return json.loads(storage.read(key))
    except ValueError as error:
        raise CheckpointError(f"{run_dir}/{key}: unreadable ({error})") from None


def finish_run(storage: Any, run_dir: str, status: str, started: float, valid: dict[str, float] | None) -> None:
    """run.json at the end of a training session: its status, the seconds it added, final metrics."""
    run = _read_json(storage, "run.json", run_dir)
    run.update(status=status, updated_at=time.time(), seconds=run.get("seconds", 0) + time.time() - started)
    if valid is not None:
        run["valid"] = valid
    _write_json(storage, "run.json", run)


def train(
    data: Any = None,
    *,
    target: str | None = None,
    config: RunConfig | None = None,
    resume: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    stop_at_step: int | None = None,
    **overrides: Any,
) -> RunResult:
    """Train a run from a path, a frame or the built-in example; or continue one (`resume=RUN_DIR`).

    Keyword overrides name any config field: `epochs=5, lr=3e-3, valid_fraction=0.2, run_dir=...`.
    """
    progress = progress or Progress(quiet=quiet)
    pretrained: Pretrained | None = None
    architecture = ARCHITECTURE
    extend_to = overrides.pop("epochs", None) if resume is not None else None
    if resume is not None and (overrides or target is not None or config is not None):
        fixed = sorted(overrides) + (["target"] if target is not None else []) + (["config"] if config else [])
        raise ConfigError(f"{resume}: a resumed run keeps its saved settings, and only epochs can change"
                          f" (to train it further); cannot change: {', '.join(fixed)}")
    prepared = image_api.prepare(data, target=target, config=config, overrides=overrides, resume=resume, progress=progress)
    if prepared is not None:  # images: read, split and fitted there; trained by the same code below
        run_dir, storage, config, schema, architecture = (prepared.run_dir, prepared.storage, prepared.config,
                                                          prepared.schema, prepared.architecture)
        model_args, train_tensors, valid_tensors = prepared.model_args, prepared.train_tensors, prepared.valid_tensors
        pretrained = prepared.pretrained
    elif resume is not None:
        storage = open_storage(resume)
        if is_own_run(storage):
            raise ConfigError(f"{resume}: a run of your own model; continue it with torchkeep.fit(model, data,"
                              f" run_dir={resume!r}, resume=True)")
        config = RunConfig.from_dict(_read_json(storage, "config.json", resume), source=f"{resume}/config.json")
        if not storage.exists("run.json"):  # stopped while being set up: nothing trained, start it over
            progress.message(f"{resume}: the run stopped before training began; starting it from its saved config")
            return train(data, config=dataclasses.replace(config, run_dir=resume), quiet=quiet, progress=progress)
        frame, name, config = _load_data(config, data)
        frame, _ = _drop_null_targets(frame, config.data.target)
        saved = _read_json(storage, "run.json", resume)["data"]
        found = _fingerprint(frame)
        if (saved["rows"], saved["columns"]) != (found["rows"], found["columns"]):
            raise DataError(f"{config.data.path or 'data'}: changed since the run started "
                            f"({saved['rows']} rows then, {found['rows']} now); resume needs the same data")
        if saved["hash"] != found["hash"]:
            log.warning("the data's content hash differs from when the run started; resuming anyway")
        schema = TableSchema.from_dict(_read_json(storage, "schema.json", resume))
        model_spec = _read_json(storage, "model.json", resume)
        architecture, model_args = model_spec["architecture"], model_spec["args"]
        run_dir = resume
        train_frame, valid_frame = _split(frame, config)
        train_tensors, valid_tensors = _transform_splits(schema, train_frame, valid_frame, config, config.data.path or name)
    else:
        config = config or RunConfig()
        if target is not None:
            overrides["target"] = target
        config = _override(config, overrides)
        frame, name, config = _load_data(config, data)
        if config.data.text_columns:
            config, changed = text_setup.apply_text_defaults(config, set(overrides) | config.explicit, rows=frame.height)
            if changed:
                progress.message(f"text columns: training defaults {', '.join(changed)}")
        if config.data.target is None:
            raise ConfigError("no target column: pass --target COLUMN (or target= in Python, [data] target in TOML)")
        run_dir = config.run_dir or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        # run.json is written last when a run is set up: without it, nothing was trained there yet.
        if open_storage(run_dir).exists("run.json"):
            raise ConfigError(f"{run_dir}: run directory exists and is not empty; continue it with --resume {run_dir} or choose another --run-dir")
        config = dataclasses.replace(config, run_dir=run_dir)
        source = config.data.path or name
        frame, null_targets = _drop_null_targets(frame, config.data.target)
        check_frame(frame, config.data.target, source)
        train_frame, valid_frame = _split(frame, config)
        schema = TableSchema.fit(
            train_frame, target=config.data.target, task=config.data.task, categorical=config.data.categorical,
            continuous=config.data.continuous, drop=config.data.drop, max_integer_levels=config.data.max_integer_levels,
            standardize_target=config.data.standardize_target, source=f"{source} (training split)",
            scaling=config.data.scaling, numeric_encoding=config.data.numeric_encoding,
            numeric_bins=config.data.numeric_bins,
            **(text_setup.fit_kwargs(config) if config.data.text_columns else {}),
        )
        if null_targets:
            schema.notes.insert(0, {"column": config.data.target, "action": "rows dropped",
                                    "reason": f"{null_targets:,} row(s) with a null target"})
        for line in schema.note_lines():
            log.warning("%s: %s", source, line)
        if not schema.text:
            config, budget_line = _apply_budget(config, set(overrides) | config.explicit, train_frame.height)
        monitor, mode = DEFAULT_MONITOR[schema.target.task]
        train_config = dataclasses.replace(config.train, monitor=config.train.monitor or monitor,
                                           monitor_mode=config.train.monitor_mode or (mode if not config.train.monitor else None))
        config = dataclasses.replace(config, train=train_config)
        pretrained, config = read_init_from(config, schema)
        architecture = text_setup.ARCHITECTURE if schema.text else ARCHITECTURE
        model_args = text_setup.model_args(config, schema) if schema.text else tabular_model_args(config.model, schema)
        # Transformed before anything is written: bad data leaves no run directory behind.
        train_tensors, valid_tensors = _transform_splits(schema, train_frame, valid_frame, config, source)
        # Also checked before: freeze patterns, and what init_from loads (on a scratch model).
        transfer_report = check_transfer(config.train.transfer, lambda: build_model(architecture, model_args),
                                         pretrained, level_aligner(schema) if not schema.text else None)
        check_device(config.train.device)
        if not schema.text and budget_line:
            progress.message(budget_line)
        storage = open_storage(run_dir)
        if transfer_report is not None:
            _write_json(storage, "transfer.json", transfer_report)
        _write_json(storage, "config.json", config.to_dict())
        _write_json(storage, "schema.json", schema.to_dict())
        _write_json(storage, "model.json", {"architecture": architecture, "args": model_args})
        _write_json(storage, "run.json", {"status": "running", "created_at": time.time(), "data": _fingerprint(frame)})

    assert schema.target is not None
    if extend_to is not None:
        config = _extend(storage, run_dir, config, extend_to, progress)
    if prepared is not None:  # from memory or streamed from files; augmented when configured
        train_loader, valid_loader = prepared.loaders(EVAL_BATCH_IMAGES)
    else:
        train_loader = BatchLoader(train_tensors, config.train.batch_size, shuffle=True, seed=config.train.seed)
        valid_loader = BatchLoader(valid_tensors, _eval_rows(valid_tensors), shuffle=False)
    seed_everything(config.train.seed)
    model = build_model(architecture, model_args)
    if resume is None and getattr(schema, "text", None):
        text_setup.set_token_weights(model, schema)
    if resume is None and getattr(schema, "text", None) and config.model.embeddings:
        for line in text_setup.load_pretrained(model, schema, config.model.embeddings):
            progress.message(line)
    task = schema.target.task
    keep_best = (f"valid_{config.train.monitor}", config.train.monitor_mode or DEFAULT_MONITOR[task][1])
    checkpointer = Checkpointer(run_dir, keep_last=config.checkpoint.keep_last,
                                keep_best=keep_best if config.checkpoint.keep_best else None,
                                async_save=config.checkpoint.async_save)
    pretrained_parameters = _init_from(model, config, schema, storage, checkpointer, progress, resume is not None,
                                       pretrained)
    trackers: list[Tracker] = []
    progress.message(f"training {task} model on {train_loader.num_rows:,} rows ({valid_loader.num_rows:,} for validation)"
                     f" -> {run_dir}")
    status = "failed"
    started = time.time()
    try:
        trackers = build_trackers(config.track.trackers, run_dir, config.to_dict())
        result = fit(
            model, loss_for_task(task), train_loader, config=config.train, valid_loader=valid_loader,
            metrics_fn=metrics_for_task(task, schema.target.std), checkpointer=checkpointer,
            checkpoint_every_steps=config.checkpoint.every_steps, checkpoint_every_epoch=config.checkpoint.every_epoch,
            trackers=trackers, progress=progress, resume=resume is not None, stop_at_step=stop_at_step,
            pretrained=pretrained_parameters,
        )
        if stop_at_step is not None and result.state.step == stop_at_step:
            status = "stopped"
            return RunResult(run_dir=run_dir, valid=result.valid, state=result.state, bundle="")
        valid = result.valid
        write_bundle(storage, model=model.cpu(), architecture=architecture, model_args=model_args,
                     schema=schema, metrics={f"valid_{k}": v for k, v in valid.items()}, prefix="bundle")
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        checkpointer.close()
        close_trackers(trackers)
        finish_run(storage, run_dir, status, started, valid if status == "complete" else None)
    return RunResult(run_dir=run_dir, valid=valid, state=result.state, bundle=f"{run_dir.rstrip('/')}/bundle")


def _init_from(model: torch.nn.Module, config: RunConfig, schema: TableSchema, storage: Any,
               checkpointer: Checkpointer, progress: Progress, resuming: bool, pretrained: Pretrained | None,
               ) -> list[str]:
    """Load `init_from` when a run starts (not on resume: the checkpoint wins); the pretrained names."""
    transfer = config.train.transfer
    if transfer.init_from is None:
        return []
    if resuming and any(info.status == "complete" for info in checkpointer.list()):
        return _read_json(storage, "transfer.json", storage.uri)["pretrained_parameters"]
    # Tables re-order embedding rows and first-layer columns by level and column name; images their head's rows by label.
    # (the aligner knows EntityEmbeddingMLP's layout only: not a text model's first layer).
    adapt = level_aligner(schema) if isinstance(schema, TableSchema) and not schema.text else transfer_adapter(schema)
    report = load_pretrained(model, pretrained or transfer.init_from, rename=transfer.rename, adapt=adapt)
    for line in report.lines():
        progress.message(line)
    if not storage.exists("transfer.json"):  # image runs: what a resume reads back
        _write_json(storage, "transfer.json", report.to_dict())
    return report.pretrained_parameters


def evaluate_tensors(model: torch.nn.Module, schema: TableSchema, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    assert schema.target is not None
    loader = BatchLoader(tensors, _eval_rows(tensors), shuffle=False)
    outputs, targets = predict_outputs(model, loader, next(model.parameters()).device)
    task = schema.target.task
    return {"loss": loss_for_task(task)(outputs, targets).item(), **metrics_for_task(task, schema.target.std)(outputs, targets)}


class Predictor:
    """A trained model with its preprocessing: raw frames in, predictions in original units out."""

    def __init__(self, model: torch.nn.Module, schema: TableSchema, meta: dict[str, Any], source: str) -> None:
        self.model, self.schema, self.meta, self.source = model.eval(), schema, meta, source
        self.device = next(model.parameters()).device  # inputs go there; outputs come back to the CPU

    @property
    def task(self) -> str:
        assert self.schema.target is not None
        return self.schema.target.task

    def predict(self, data: Any, *, source: str = "data", image_dir: str | None = None) -> pl.DataFrame:
        """A frame with `prediction` (labels / original units) and, for classification, probabilities."""
        if getattr(self.schema, "kind", "table") == "image":  # a folder, CSV of files, idx folder or pixels
            raw = image_api.read_for_predict(self.schema, data, with_labels=False, image_dir=image_dir)
            predictions = self.predict_frame(torch.from_numpy(raw.images))
            return pl.concat([pl.DataFrame({"file": raw.files}), predictions], how="horizontal") if raw.files else predictions
        frame = read_table(data) if isinstance(data, str) else as_frame(data)
        return self.predict_frame(frame, source=data if isinstance(data, str) else source)

    def predict_frame(self, frame: pl.DataFrame, *, source: str = "data") -> pl.DataFrame:
        """The one prediction path: `predict`, the CLI and the HTTP server all come through here.
        For an image model the "frame" is uint8 pixels [N, C, H, W] at the schema's size."""
        if isinstance(frame, torch.Tensor):
            tensors, rows, batch_rows = {"image": frame}, len(frame), EVAL_BATCH_IMAGES
        else:
            if self.schema.text:
                check_texts(frame, [c.name for c in self.schema.text], source)
            tensors = self.schema.transform(frame, with_target=False, source=source, packed_text=True)
            rows, batch_rows = frame.height, EVAL_BATCH_ROWS
        outputs = []
        with torch.no_grad():
            for start in range(0, rows, batch_rows):
                batch = {k: v[start : start + batch_rows].to(self.device) for k, v in tensors.items()}
                outputs.append(self.model(**batch).cpu())
        return self.schema.decode(torch.cat(outputs))

    def evaluate(self, data: Any, *, source: str = "data", image_dir: str | None = None) -> dict[str, float]:
        if getattr(self.schema, "kind", "table") == "image":
            raw = image_api.read_for_predict(self.schema, data, with_labels=True, image_dir=image_dir)
            return evaluate_tensors(self.model, self.schema, self.schema.transform(raw, source=str(data)))
        frame = read_table(data) if isinstance(data, str) else as_frame(data)
        tensors = self.schema.transform(frame, source=source if not isinstance(data, str) else data, packed_text=True)
        return evaluate_tensors(self.model, self.schema, tensors)


def load(path: str, *, device: str = "cpu") -> Predictor | TensorPredictor:
    """A Predictor from a bundle directory, or a run directory (its bundle, else its newest valid checkpoint).
    A model trained with torchkeep.fit comes back as a TensorPredictor (tensors in, tensors out).
    `device`: where the model runs ("cpu", "cuda", "cuda:1", "auto"); inputs and outputs stay on the CPU."""
    check_device(device)
    storage = open_storage(path)
    own = load_own_model(storage, path, device=resolve_device(device))
    if own is not None:
        return own
    if storage.exists("bundle/bundle.json"):
        model, schema, meta = read_bundle(storage, "bundle")
    elif storage.exists("bundle.json"):
        model, schema, meta = read_bundle(storage)
    elif storage.exists("config.json"):
        schema = schema_from_dict(_read_json(storage, "schema.json", path))
        spec = _read_json(storage, "model.json", path)
        model = build_model(spec["architecture"], spec["args"])
        meta = {"architecture": spec["architecture"], "checkpoint": load_unfinished(storage, model, path)}
    else:
        if "://" not in path and not Path(path).exists():
            raise DataError(f"{path}: no such run or bundle")
        raise CheckpointError(f"{path}: not a torchkeep run or bundle (no bundle.json or config.json)")
    return Predictor(model.to(resolve_device(device)), schema, meta, path)
