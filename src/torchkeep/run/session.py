"""A training session of any run, once: trackers, the loop with its checkpoints, the bundle, run.json.

Every kind (tables, images, text, a user's own model) sets its run up in its own module and hands
the same things here; what differs at the end (how the bundle is written) comes as a function.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchkeep import distributed
from torchkeep.checkpoint import Checkpointer
from torchkeep.config import CheckpointConfig, RunConfig
from torchkeep.data.images import AugmentingLoader, ImageFileDataset
from torchkeep.data.loader import BatchLoader, DatasetLoader
from torchkeep.data.stream import StreamLoader
from torchkeep.predict.predictor import eval_batch_rows
from torchkeep.run.rundir import RunDir
from torchkeep.track import Tracker, build_trackers, close_trackers
from torchkeep.training.loop import FitResult, TrainConfig, fit
from torchkeep.training.metrics import MetricFn
from torchkeep.training.progress import Progress
from torchkeep.training.transfer import Pretrained

log = logging.getLogger("torchkeep")


@dataclass
class Setup:
    """A table, text or image run set up (or reopened) by its kind's module: what its session trains."""

    run: RunDir
    config: RunConfig
    schema: Any  # TableSchema | ImageSchema
    architecture: str
    model_args: dict[str, Any]
    train_tensors: dict[str, Any] | None  # None: images over the memory budget, streamed from files
    valid_tensors: dict[str, Any] | None
    streamed: tuple[ImageFileDataset, ImageFileDataset] | None = None
    pretrained: Pretrained | None = None  # init_from, read once while setting up (checked, then loaded)
    stream_loaders: tuple[Any, Any] | None = None  # a table streamed from parquet files (run/tables_stream.py)

    def loaders(self) -> tuple[Any, Any]:
        """(training loader, validation loader): whole batches from memory, or DatasetLoader workers;
        training images augmented when configured."""
        data, train = self.config.data, self.config.train
        if self.stream_loaders is not None:
            return self.stream_loaders
        if self.streamed is None:
            assert self.train_tensors is not None and self.valid_tensors is not None
            env = distributed.current()  # each process its slice of every global batch
            loader: Any = BatchLoader(self.train_tensors, train.batch_size, shuffle=True, seed=train.seed,
                                      rank=env.rank, world_size=env.world_size)
            valid: Any = BatchLoader(self.valid_tensors, eval_batch_rows(self.valid_tensors), shuffle=False)
        else:
            knobs = {"num_workers": data.num_workers, "pin_memory": data.pin_memory,
                     "persistent_workers": data.persistent_workers, "prefetch_factor": data.prefetch_factor}
            loader = DatasetLoader(self.streamed[0], train.batch_size, shuffle=True, seed=train.seed, **knobs)
            valid = DatasetLoader(self.streamed[1], eval_batch_rows({"image": None}), shuffle=False, **knobs)
        if getattr(self.schema, "kind", "table") == "image" and (data.augment_pad or data.augment_flip):
            loader = AugmentingLoader(loader, pad=data.augment_pad, flip=data.augment_flip)
        return loader, valid


def checkpointer_for(run: RunDir, config: CheckpointConfig, keep_best: tuple[str, str] | None) -> Checkpointer:
    """The run's Checkpointer: retention of the last k, and of the best k by `keep_best` (metric, mode)."""
    return Checkpointer(run.path, keep_last=config.keep_last, keep_best=keep_best if config.keep_best else None,
                        async_save=config.async_save)


def train_session(
    run: RunDir,
    *,
    model: nn.Module,
    loss_fn: Callable[..., Any],
    metrics_fn: MetricFn | None,
    train_loader: Any,
    valid_loader: Any,
    train_config: TrainConfig,
    checkpoint_config: CheckpointConfig,
    checkpointer: Checkpointer,
    trackers: list[str],
    tracked_config: dict[str, Any],
    progress: Progress,
    resume: bool,
    stop_at_step: int | None,
    save_bundle: Callable[[dict[str, float]], None],
    pretrained: list[str] | None = None,
    extra_trackers: Sequence[Tracker] = (),
) -> tuple[FitResult, bool]:
    """Train, then (unless stopped at `stop_at_step`) `save_bundle(valid metrics)`; run.json records how
    the session ended (complete, stopped, interrupted, failed) whatever happens. (result, completed).
    With more than one process every rank trains; rank 0 alone writes trackers, the bundle and run.json."""
    opened: list[Tracker] = []
    status, valid = "failed", None
    started = time.time()
    main = distributed.is_main()
    with rank_log(run.path):
        try:
            opened = build_trackers(trackers, run.path, tracked_config) if main else []
            result = fit(
                model, loss_fn, train_loader, config=train_config, valid_loader=valid_loader, metrics_fn=metrics_fn,
                checkpointer=checkpointer, checkpoint_every_steps=checkpoint_config.every_steps,
                checkpoint_every_epoch=checkpoint_config.every_epoch, progress=progress,
                trackers=[*opened, *extra_trackers] if main else [],
                resume=resume, stop_at_step=stop_at_step, pretrained=pretrained or (),
            )
            if stop_at_step is not None and result.state.step == stop_at_step:
                status = "stopped"
            else:
                if main:
                    save_bundle(result.valid)
                status, valid = "complete", result.valid
                for loader in (train_loader, valid_loader):  # a finished run keeps no decoded copy of its data
                    if isinstance(loader, StreamLoader):
                        loader.drop_cache()
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            checkpointer.close()
            close_trackers(opened)
            if main:
                run.finish(status, started, valid, **distributed.describe(train_config.strategy))
            log.info("training session %s after %.1f s", status, time.time() - started)
    return result, status == "complete"


@contextmanager
def rank_log(run_dir: str) -> Iterator[None]:
    """With more than one process, each rank's torchkeep log lines (warnings, how its session ended) also go to
    RUN_DIR/logs/rank-K.log (local run directories; an s3:// run's ranks log to their stderr only)."""
    env = distributed.current()
    if not env.distributed or "://" in run_dir:
        yield
        return
    os.makedirs(os.path.join(run_dir, "logs"), exist_ok=True)
    handler = logging.FileHandler(os.path.join(run_dir, "logs", f"rank-{env.rank}.log"))
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {env.rank}/{env.world_size} %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    level = log.level
    log.addHandler(handler)
    log.setLevel(min(level or logging.WARNING, logging.INFO))
    log.info("training session started: rank %d of %d (local rank %d), restart %d", env.rank, env.world_size,
             env.local_rank, env.restart_count)
    try:
        yield
    except BaseException as error:  # into the rank's file (info: the error itself reaches stderr once, as one line)
        log.info("training session failed: %s: %s", type(error).__name__, error)
        raise
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        handler.close()
