"""`torchkeep.fit`: train your own nn.Module on tensors, a Dataset or a DataLoader, with the same loop,
progress, trackers, async checkpoints, exact resume and `s3://` run directories as `torchkeep train`.

A run directory of an own model holds:
    run.json        status, data fingerprint (rows, input and target tensors), timings, final metrics
    config.json     the train / checkpoint / track settings (those sections of RunConfig)
    model.json      architecture "python", args {"import": "module:QualName", "args": {...} or null},
                    the input tensors ("inputs"), the loss and the task
    metrics.jsonl, checkpoints/, bundle/   as for a table run; export/ when the class cannot be rebuilt

The low-level loop is `torchkeep.training.loop.fit(model, loss_fn, loader, config=TrainConfig(...))`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchkeep import distributed
from torchkeep.bundle import write_bundle
from torchkeep.config import CheckpointConfig
from torchkeep.data.inputs import Prepared, describe_inputs, prepare, sample_target
from torchkeep.errors import ConfigError, DataError, TorchkeepError
from torchkeep.export.own_model import export_module
from torchkeep.models.imported import ARCHITECTURE, constructor_args, import_path, import_problem
from torchkeep.run.rundir import RunDir, fingerprint
from torchkeep.run.session import checkpointer_for, train_session
from torchkeep.run.settings import tracker_objects
from torchkeep.track import TrackConfig
from torchkeep.training import loop
from torchkeep.training.losses import TASKS, LossFn, infer_loss, named_loss
from torchkeep.training.metrics import DEFAULT_MONITOR, HIGHER_IS_BETTER, MetricFn, metrics_for_task
from torchkeep.training.optim import OptimConfig
from torchkeep.training.progress import Progress
from torchkeep.training.state import TrainState

log = logging.getLogger("torchkeep")

SECTIONS = {"train": loop.TrainConfig, "optim": OptimConfig, "checkpoint": CheckpointConfig, "track": TrackConfig}


@dataclass
class ModelRun:
    """What `torchkeep.fit` returns: the trained model (the weights of its best validation, where there
    was one) and where its run, metrics and bundle are."""

    run_dir: str
    model: nn.Module
    valid: dict[str, float]  # the validation metrics the model ended with ({} without valid_data)
    history: list[dict[str, Any]]  # the events of this call (train every log_every_steps, each validation)
    state: TrainState
    bundle: str  # "" when stopped early by stop_at_step


def _settings(values: dict[str, Any]) -> tuple[loop.TrainConfig, CheckpointConfig, TrackConfig]:
    """Flat settings (`epochs=5, lr=1e-3, every_steps=100, trackers=["tensorboard"]`) to the configs that own them."""
    updates: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in values.items():
        owner = next((name for name, cls in SECTIONS.items() if key in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            raise ConfigError(f"unknown setting '{key}' (settings are the fields of TrainConfig, OptimConfig,"
                              " CheckpointConfig and TrackConfig)")
        updates[owner][key] = value
    optim = updates["train"].pop("optim", None) or {}
    optim = OptimConfig(**{**(optim if isinstance(optim, dict) else dataclasses.asdict(optim)), **updates["optim"]})
    return (loop.TrainConfig(**updates["train"], optim=optim), CheckpointConfig(**updates["checkpoint"]),
            TrackConfig(**updates["track"]))


def _saved_settings(saved: dict[str, Any], given: dict[str, Any],
                    run_dir: str) -> tuple[loop.TrainConfig, CheckpointConfig, TrackConfig]:
    """The settings a run was started with; a setting given again must have the same value."""
    train, checkpoint, track = (loop.TrainConfig(**saved["train"]), CheckpointConfig(**saved["checkpoint"]),
                                TrackConfig(**saved["track"]))
    flat = {**dataclasses.asdict(train), **dataclasses.asdict(train.optim), **dataclasses.asdict(checkpoint),
            **dataclasses.asdict(track)}
    for key, value in given.items():
        if key in flat and key != "optim" and flat[key] != value:
            raise ConfigError(f"{run_dir}: {key} was {flat[key]!r} when the run started, now {value!r}; a resumed run"
                              " keeps its settings (start a new run_dir to change them)")
    return train, checkpoint, track


def _loss(loss: str | LossFn | None, prepared: Prepared) -> tuple[LossFn, str | None]:
    if callable(loss):
        return loss, None
    name = loss if loss is not None else infer_loss(sample_target(prepared.sample), seen=prepared.seen)
    return named_loss(name), name


def _metrics(metrics: str | MetricFn | None, loss_name: str | None) -> tuple[MetricFn | None, str | None]:
    if callable(metrics):
        return metrics, None
    if metrics == "auto":
        task = TASKS.get(loss_name or "")
        return (metrics_for_task(task), task) if task else (None, None)
    if metrics is None:
        return None, None
    if metrics not in DEFAULT_MONITOR:
        raise ConfigError(f"metrics={metrics!r}: expected binary, multiclass, regression, None or a callable"
                          " (outputs, targets) -> {name: value}")
    return metrics_for_task(metrics), metrics


def _fingerprint(prepared: Prepared, inputs: dict[str, Any]) -> dict[str, Any]:
    """The tensors' names, dtypes and shapes stand for the content (the data lives in the user's script)."""
    described = json.dumps([inputs["inputs"], inputs["target"]], sort_keys=True, default=str).encode()
    return fingerprint(prepared.rows, [spec["name"] for spec in inputs["inputs"]], described, kind=prepared.kind,
                       inputs=inputs["inputs"], target=inputs["target"])


def _check_same_data(saved: dict[str, Any], found: dict[str, Any], run_dir: str) -> None:
    if saved["kind"] != found["kind"]:  # their loaders save different positions
        raise DataError(f"train_data: {found['kind']} now, but the run in {run_dir} started on {saved['kind']};"
                        " resume needs the same kind of data")
    if saved["rows"] != found["rows"]:
        raise DataError(f"train_data: {found['rows']:,} rows, but the run in {run_dir} started on {saved['rows']:,};"
                        " resume needs the same data")
    if (saved["inputs"], saved["target"]) != (found["inputs"], found["target"]):
        raise DataError(f"train_data: its tensors are not the ones the run in {run_dir} started on"
                        f" ({saved['inputs']} -> {found['inputs']})")


def fit(
    model: nn.Module,
    train_data: Any,
    valid_data: Any = None,
    *,
    loss: str | LossFn | None = None,
    metrics: str | MetricFn | None = "auto",
    run_dir: str | None = None,
    resume: bool = False,
    model_args: dict[str, Any] | None = None,
    num_workers: int | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    stop_at_step: int | None = None,
    **config: Any,
) -> ModelRun:
    """Train `model` (any nn.Module) with torchkeep's loop, checkpoints and run directory; see the README.

    Data (train and valid alike; data/inputs.py): an `(inputs, target)` pair of tensors or a dict of
    tensors with "target" (fast path: whole batches gathered in memory), a map-style `Dataset`
    (`__getitem__` per row, DataLoader workers: `num_workers`), or a `DataLoader`, which is rebuilt
    from its dataset, batch_size, shuffle, drop_last, collate_fn and worker settings so that resume
    stays exact (its batch order then comes from the run's seed).

    `loss`: "cross_entropy", "bce", "mse" or a callable `(output, target) -> loss`; None infers it
    from the targets where they leave no doubt (integers: cross_entropy, booleans: bce, floats other
    than all 0/1: mse). `metrics`: "auto" (those of the named loss's task), "binary", "multiclass",
    "regression", a callable `(outputs, targets) -> dict`, or None (loss only).

    `run_dir` (local or s3://; default runs/<class>-<time>). `resume=True` continues the run in
    `run_dir` from its newest valid checkpoint, bit for bit as if never stopped; pass the same model
    class, data and settings (the model's own weights are replaced by the checkpoint's). Where
    `run_dir` holds no run yet, it starts one, so one script serves for the first start and every
    restart. `model_args`: the model's constructor arguments as JSON, so that `torchkeep.load` can
    rebuild it (models/imported.py says what happens without them). `stop_at_step`: end right after
    that optimizer step with a checkpoint, as a kill would (tests, replay).

    `**config`: any field of TrainConfig, OptimConfig, CheckpointConfig or TrackConfig, e.g.
    `epochs=5, batch_size=64, lr=1e-3, early_stopping_patience=3, every_steps=100, trackers=["tensorboard"]`;
    `trackers` also takes objects with `log(metrics, step)` and `close()`, which get every logged event
    (`torchkeep.tune.TuneReporter` reports validations to Ray Tune).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module (got {type(model).__name__})")
    if run_dir is None and resume:
        raise ConfigError("resume=True needs the run_dir of the run to continue")
    extra_trackers = tracker_objects(config)  # trackers=[...] names go to the config, objects get events too
    env = distributed.setup(config.get("device", "auto"))  # a script started by torchrun: one call per process
    progress = (progress or Progress(quiet=quiet)) if env.rank == 0 else Progress(quiet=True)
    if env.rank != 0:  # rank 0 sets the run up (or reopens it), then the others open it
        run = RunDir.open(distributed.broadcast_object(None))
    else:
        run = RunDir.open(run_dir) if resume else RunDir.new(run_dir, type(model).__name__.lower(),
                                                             resume_hint="resume=True", run_dir_hint="run_dir")
    existing = run.started  # run.json is written last when a run is set up
    if existing:
        spec = run.read("model.json") if run.exists("model.json") else {}
        if spec.get("architecture") != ARCHITECTURE:
            raise ConfigError(f"{run.path}: a table run; continue it with torchkeep.train(resume={run.path!r})")
        train_config, checkpoint_config, track_config = _saved_settings(run.read("config.json"), config, run.path)
    else:
        if resume:
            progress.message(f"{run.path}: no run there yet; starting it")
        train_config, checkpoint_config, track_config = _settings(config)
    run_dir = run.path

    settings = {"batch_size": train_config.batch_size, "seed": train_config.seed, "num_workers": num_workers,
                "explicit_batch_size": "batch_size" in config}
    train = prepare(train_data, what="train_data", shuffle=True, **settings)
    valid = None if valid_data is None else prepare(valid_data, what="valid_data", shuffle=False, **settings)
    if existing and train.batch_size != train_config.batch_size:
        raise DataError(f"train_data: batches of {train.batch_size}, but the run in {run_dir} started with"
                        f" batches of {train_config.batch_size}; resume needs the same data")
    if train.batch_size != train_config.batch_size:  # a DataLoader's own batch size
        train_config = dataclasses.replace(train_config, batch_size=train.batch_size)
    inputs = describe_inputs(train.sample)
    loss_fn, loss_name = _loss(loss, train)
    metrics_fn, task = _metrics(metrics, loss_name)
    found = _fingerprint(train, inputs)

    if existing:
        model_spec = _reopen(run, spec, model, model_args, found)
    else:
        train_config, model_spec = _start(run, model, model_args, train_config, checkpoint_config, track_config,
                                          task=task, loss_name=loss_name, inputs=inputs, found=found,
                                          validated=valid is not None)

    if env.distributed and env.rank == 0:
        distributed.broadcast_object(run.path)
    monitor = train_config.monitor or "loss"
    mode = train_config.monitor_mode or ("max" if monitor in HIGHER_IS_BETTER else "min")
    checkpointer = checkpointer_for(run, checkpoint_config, (f"valid_{monitor}", mode) if valid is not None else None)
    progress.message(f"training {type(model).__name__} on {train.rows:,} rows"
                     + (f" ({valid.rows:,} for validation)" if valid else "") + f" -> {run_dir}")

    def save_bundle(valid_metrics: dict[str, float]) -> None:
        write_bundle(run.storage, model=model, architecture=ARCHITECTURE, model_args=model_spec, schema=None,
                     preprocessor=inputs, task=task, metrics={f"valid_{k}": v for k, v in valid_metrics.items()},
                     prefix="bundle")
        if model_spec["args"] is None:
            _export_without_class(model, inputs, f"{run_dir.rstrip('/')}/export")

    result, complete = train_session(
        run, model=model, loss_fn=loss_fn, metrics_fn=metrics_fn, train_loader=train.loader,
        valid_loader=valid.loader if valid else None, train_config=train_config, checkpoint_config=checkpoint_config,
        checkpointer=checkpointer, trackers=track_config.trackers, tracked_config=run.read("config.json"),
        progress=progress, resume=existing, stop_at_step=stop_at_step, save_bundle=save_bundle,
        extra_trackers=extra_trackers)
    return ModelRun(run_dir=run_dir, model=model, valid=result.valid, history=result.history, state=result.state,
                    bundle=run.bundle if complete else "")


def _reopen(run: RunDir, spec: dict[str, Any], model: nn.Module, model_args: dict[str, Any] | None,
            found: dict[str, Any]) -> dict[str, Any]:
    """A run to continue: the same data and model class as it started with; its model spec."""
    _check_same_data(run.read("run.json")["data"], found, run.path)
    model_spec = spec["args"]
    if model_args is not None and model_args != model_spec["args"]:
        raise ConfigError(f"{run.path}: model_args were {model_spec['args']} when the run started, now {model_args}")
    if model_spec["import"] != import_path(type(model)):
        log.warning("%s was trained as %s; continuing it with %s", run.path, model_spec["import"],
                    import_path(type(model)))
    return model_spec


def _start(run: RunDir, model: nn.Module, model_args: dict[str, Any] | None, train_config: loop.TrainConfig,
           checkpoint_config: CheckpointConfig, track_config: TrackConfig, *, task: str | None, loss_name: str | None,
           inputs: dict[str, Any], found: dict[str, Any], validated: bool) -> tuple[loop.TrainConfig, dict[str, Any]]:
    """A new run: the default monitor, the device checked, then the run's files (run.json last)."""
    if task and train_config.monitor is None and validated:
        monitor, mode = DEFAULT_MONITOR[task]
        train_config = dataclasses.replace(train_config, monitor=monitor, monitor_mode=train_config.monitor_mode or mode)
    if problem := import_problem(type(model)):
        log.warning("%s, so torchkeep.load can rebuild it only in a process that defines it too; move the class"
                    " into a module to load the bundle anywhere", problem)
    model_spec = {"import": import_path(type(model)), "args": constructor_args(model, model_args)}
    loop.check_device(train_config.device)
    settings_json = {"run_dir": run.path, "data": {"task": task}, "train": dataclasses.asdict(train_config),
                     "checkpoint": dataclasses.asdict(checkpoint_config), "track": dataclasses.asdict(track_config)}
    run.write_setup(config=settings_json, data=found,
                    model={"architecture": ARCHITECTURE, "args": model_spec, "inputs": inputs,
                           "loss": loss_name or "callable", "task": task})
    return train_config, model_spec


def _export_without_class(model: nn.Module, inputs: dict[str, Any], out: str) -> None:
    """A bundle that cannot rebuild its class still leaves a model that runs: a parity-checked pt2 export."""
    try:
        # a copy: the export moves its model to the CPU and to eval mode, and the caller's stays as it is
        result = export_module(copy.deepcopy(model), inputs, {"import": import_path(type(model)), "args": None},
                               format="pt2", out=out)
    except TorchkeepError as error:
        log.warning("no class-free export either: %s", error)
        return
    log.warning("exported %s (runs without the class: torch.export.load(...).module())", result.path)
