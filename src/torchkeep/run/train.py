"""`torchkeep.train`: start a run of a table, text or image data, or continue one (`resume=RUN_DIR`).

The kind's module sets the run up (run/tables.py, run/images.py: `start` and `reopen`); everything
after that is the same for every kind: the model, init_from, checkpoints, and the session
(run/session.py) that trains and writes the bundle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchkeep import distributed
from torchkeep.bundle import write_bundle
from torchkeep.checkpoint import Checkpointer
from torchkeep.config import RunConfig
from torchkeep.data.table import TableSchema
from torchkeep.errors import ConfigError
from torchkeep.models.build import build_model, loss_for_task
from torchkeep.predict.own_model import is_own_run
from torchkeep.run import images, tables, tables_stream, text
from torchkeep.run.images_transfer import transfer_adapter
from torchkeep.run.rundir import RunDir
from torchkeep.run.session import Setup, checkpointer_for, train_session
from torchkeep.run.settings import override, tracker_objects
from torchkeep.run.tables_transfer import level_aligner
from torchkeep.track import Tracker
from torchkeep.training.metrics import DEFAULT_MONITOR, metrics_for_task
from torchkeep.training.progress import Progress
from torchkeep.training.state import TrainState, seed_everything
from torchkeep.training.transfer import Pretrained, load_pretrained


@dataclass
class RunResult:
    run_dir: str
    valid: dict[str, float]
    state: TrainState
    bundle: str


def train(
    data: Any = None,
    *,
    target: str | None = None,
    config: RunConfig | None = None,
    resume: str | None = None,
    quiet: bool = False,
    progress: Progress | None = None,
    stop_at_step: int | None = None,
    steps: int | None = None,
    nproc: int = 1,
    max_restarts: int = 0,
    **overrides: Any,
) -> RunResult:
    """Train a run from a path, a frame or the built-in example; or continue one (`resume=RUN_DIR`).

    Keyword overrides name any config field: `epochs=5, lr=3e-3, valid_fraction=0.2, run_dir=...`.
    `steps`: train about this many optimizer steps (rounded up to whole epochs) instead of the table
    budget's; with `resume`, train the run further to that many steps (as `epochs=` does in epochs).
    `trackers=[...]` takes tracker names and objects: an object (with `log(metrics, step)` and `close()`) gets
    every logged event too, on resume as well (a study's trials report to Ray Tune through one); what it
    raises ends the run.
    `nproc`: train in that many processes on this machine (torch's elastic launcher, as `torchkeep train
    --nproc N`; strategy="ddp" | "fsdp"); `max_restarts`: start them again after a failure, resuming the run
    in `run_dir` from its last checkpoint. Also works in a script started by torchrun (one call per process).
    """
    trackers = tracker_objects(overrides)
    launch = distributed.Launch(nproc=nproc, max_restarts=max_restarts)
    if launch.needed and not distributed.in_launched_worker():
        if max_restarts and resume is None and not (overrides.get("run_dir") or (config and config.run_dir)):
            raise ConfigError("max_restarts starts the workers again, and they resume the run in run_dir: name one")
        results = distributed.launch_function(launch, train, data=data, target=target, config=config, resume=resume,
                                              quiet=quiet, stop_at_step=stop_at_step, steps=steps, **overrides)
        return results[0]
    env = distributed.setup(overrides.get("device") or (config.train.device if config else "auto"))
    progress = (progress or Progress(quiet=quiet)) if env.rank == 0 else Progress(quiet=True)
    if resume is None and env.restart_count > 0:  # started again by the elastic agent: continue the run
        run_dir = overrides.get("run_dir") or (config.run_dir if config else None)
        if run_dir is not None and RunDir.open(run_dir).started:
            progress.message(f"restart {env.restart_count}: resuming {run_dir} from its last committed checkpoint")
            return train(data, resume=run_dir, progress=progress, stop_at_step=stop_at_step,
                         **({"trackers": trackers} if trackers else {}))
    if resume is None and env.rank != 0:  # rank 0 sets a new run up, then the others open it
        run = RunDir.open(distributed.broadcast_object(None))
        return _session(_reopen(run, data, progress), resuming=False, extend_to=None, progress=progress,
                        stop_at_step=stop_at_step, trackers=trackers)
    if steps is not None and steps < 1:
        raise ConfigError(f"steps must be > 0 (got {steps})")
    extend_to = overrides.pop("epochs", None) if resume is not None else None
    if resume is not None and steps is not None and extend_to is not None:
        raise ConfigError("--steps and --epochs both set how far to train a run further; give one of them")
    if resume is not None and (overrides or target is not None or config is not None):
        fixed = sorted(overrides) + (["target"] if target is not None else []) + (["config"] if config else [])
        raise ConfigError(f"{resume}: a resumed run keeps its saved settings, and only epochs can change"
                          f" (to train it further); cannot change: {', '.join(fixed)}")
    if resume is not None:
        run = RunDir.open(resume)
        if is_own_run(run.storage):
            raise ConfigError(f"{resume}: a run of your own model; continue it with torchkeep.fit(model, data,"
                              f" run_dir={resume!r}, resume=True)")
        if not run.started:  # stopped while being set up: nothing trained, start it over
            config = RunConfig.from_dict(run.read("config.json"), source=f"{resume}/config.json")
            progress.message(f"{resume}: the run stopped before training began; starting it from its saved config")
            return train(data, config=dataclasses.replace(config, run_dir=resume), quiet=quiet, progress=progress,
                         trackers=trackers)
        setup = _reopen(run, data, progress)
    else:
        config = config or RunConfig()
        if target is not None:
            overrides["target"] = target
        image_overrides = dict(overrides)
        vision = images.vision_settings(image_overrides)
        image_config = override(config, image_overrides)
        if images.is_image_data(image_config, data):
            if steps is not None:
                raise ConfigError("--steps sets a table run's budget; an image run takes --epochs")
            setup = images.start(data, image_config, image_overrides, vision, progress)
        else:  # a table: read whole, or streamed from a parquet dataset larger than memory
            dataset = tables_stream.dataset_at(image_config, data)
            if dataset is not None and tables_stream.streams(image_config, dataset):
                setup = tables_stream.start(dataset, config, overrides, progress, steps=steps)
            else:
                setup = tables.start(data, config, overrides, progress, steps=steps, dataset=dataset)
    return _session(setup, resuming=resume is not None, extend_to=extend_to, progress=progress,
                    stop_at_step=stop_at_step, steps=steps, announce=resume is None and env.distributed,
                    trackers=trackers)


def _reopen(run: RunDir, data: Any, progress: Progress) -> Setup:
    if images.is_image_run(run):
        return images.reopen(run, data, progress)
    return tables_stream.reopen(run, data) if tables_stream.is_stream_run(run) else tables.reopen(run, data)


def _session(setup: Setup, *, resuming: bool, extend_to: int | None, progress: Progress,
             stop_at_step: int | None, steps: int | None = None, announce: bool = False,
             trackers: Sequence[Tracker] = ()) -> RunResult:
    """`announce`: rank 0 of a new multi-process run tells the others where the run is, once it is set up."""
    run, config, schema = setup.run, setup.config, setup.schema
    assert schema.target is not None
    train_loader, valid_loader = setup.loaders()
    if steps is not None:  # whole epochs of the run's own optimizer steps (text tables skip the budget)
        epochs = math.ceil(steps / math.ceil(len(train_loader) / config.train.grad_accum_steps))
        if resuming:
            extend_to = epochs
        elif epochs != config.train.epochs:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
            run.write("config.json", config.to_dict())
    if extend_to is not None:
        config = _extend(run, config, extend_to, progress)
    seed_everything(config.train.seed)
    model = build_model(setup.architecture, setup.model_args)
    if not resuming and getattr(schema, "text", None):
        text.set_token_weights(model, schema)
        if config.model.embeddings:
            for line in text.load_pretrained(model, schema, config.model.embeddings):
                progress.message(line)
    task = schema.target.task
    keep_best = (f"valid_{config.train.monitor}", config.train.monitor_mode or DEFAULT_MONITOR[task][1])
    checkpointer = checkpointer_for(run, config.checkpoint, keep_best)
    pretrained = _init_from(model, config, schema, run, checkpointer, progress, resuming, setup.pretrained)
    progress.message(f"training {task} model on {train_loader.num_rows:,} rows ({valid_loader.num_rows:,} for validation)"
                     f" -> {run.path}")
    if announce:
        distributed.broadcast_object(run.path)

    def save_bundle(valid: dict[str, float]) -> None:
        write_bundle(run.storage, model=model.cpu(), architecture=setup.architecture, model_args=setup.model_args,
                     schema=schema, metrics={f"valid_{k}": v for k, v in valid.items()}, prefix="bundle")

    result, complete = train_session(
        run, model=model, loss_fn=loss_for_task(task, config.model.label_smoothing), metrics_fn=metrics_for_task(task, schema.target.std),
        train_loader=train_loader, valid_loader=valid_loader, train_config=config.train,
        checkpoint_config=config.checkpoint, checkpointer=checkpointer, trackers=config.track.trackers,
        tracked_config=config.to_dict(), progress=progress, resume=resuming, stop_at_step=stop_at_step,
        save_bundle=save_bundle, pretrained=pretrained, extra_trackers=trackers)
    return RunResult(run_dir=run.path, valid=result.valid, state=result.state, bundle=run.bundle if complete else "")


def _extend(run: RunDir, config: RunConfig, epochs: int, progress: Progress) -> RunConfig:
    """A resumed run's config with a new epoch budget, saved; the loop rebuilds its schedule for it."""
    done = 0
    complete = [info for info in Checkpointer(run.path, async_save=False).list() if info.status == "complete"]
    if complete:
        done = int(complete[-1].epoch or 0)
    if epochs <= done:
        raise ConfigError(f"{run.path}: the run has trained {done} epoch(s); --epochs {epochs} must be more to extend it")
    if epochs != config.train.epochs:
        progress.message(f"extending {run.path} from {config.train.epochs} to {epochs} epochs")
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    if distributed.is_main():
        run.write("config.json", config.to_dict())
    return config


def _init_from(model: nn.Module, config: RunConfig, schema: Any, run: RunDir, checkpointer: Checkpointer,
               progress: Progress, resuming: bool, pretrained: Pretrained | None) -> list[str]:
    """Load `init_from` when a run starts (not on resume: the checkpoint wins); the pretrained names."""
    transfer = config.train.transfer
    if transfer.init_from is None:
        return []
    if resuming and any(info.status == "complete" for info in checkpointer.list()):
        return run.read("transfer.json")["pretrained_parameters"]
    # Tables re-order embedding rows and first-layer columns by level and column name; images their head's rows by label.
    # (the aligner knows EntityEmbeddingMLP's layout only: not a text model's first layer).
    adapt = level_aligner(schema) if isinstance(schema, TableSchema) and not schema.text else transfer_adapter(schema)
    report = load_pretrained(model, pretrained or transfer.init_from, rename=transfer.rename, adapt=adapt)
    for line in report.lines():
        progress.message(line)
    if not run.exists("transfer.json"):  # image runs: what a resume reads back
        run.write("transfer.json", report.to_dict())
    return report.pretrained_parameters
