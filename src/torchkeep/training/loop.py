"""fit(): the training loop, one function top to bottom.

It takes any nn.Module, a loss, loaders and a TrainConfig, and knows nothing about tables,
images or text. Batches are either dicts (the key "target" is the label, every other key is
passed to the model by name: `model(**inputs)`) or `(inputs, target)` pairs (`model(inputs)`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Sized
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from torchkeep import distributed
from torchkeep.checkpoint import Checkpointer
from torchkeep.errors import CheckpointError, ConfigError
from torchkeep.track import Tracker
from torchkeep.training.evaluate import check_device, evaluate, forward, resolve_device
from torchkeep.training.ema import WeightAverage, ema_weights
from torchkeep.training.metrics import HIGHER_IS_BETTER, MetricFn
from torchkeep.training.optim import OptimConfig, build_optimizer, build_scheduler
from torchkeep.training.progress import Progress
from torchkeep.training.schedule import anneal_lr, annealed, extend_schedule, start_anneal
from torchkeep.training.state import TrainState, seed_everything
from torchkeep.training.transfer import TransferConfig, TransferPlan

log = logging.getLogger("torchkeep")


@dataclass(kw_only=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 1024
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    valid_every_steps: int | None = None  # validation also runs at every epoch end (unless valid_every_epoch is off)
    valid_every_epoch: bool = True  # False: validate every valid_every_steps and after the last step only
    early_stopping_patience: int | None = None  # validations without improvement before stopping
    monitor: str | None = None  # metric early stopping and best-k watch; None: per task
    monitor_mode: str | None = None  # "min" | "max"; None: from the metric's name
    restore_best: bool = True  # end with the weights of the best validation (when there is one)
    seed: int = 0
    deterministic: bool = False
    log_every_steps: int = 50
    device: str = "auto"
    # CPU threads for torch (None: torch's default, one per core). On a machine shared with other
    # busy processes, fewer threads than cores avoid stalls where threads wait on each other.
    threads: int | None = None
    # Exponential moving average of the weights (training/ema.py), updated after every optimizer step;
    # validation, the best-epoch pick and the final weights use it. None: off.
    ema_decay: float | None = None
    # At the first stall (early_stopping_patience validations without a better one), restore the best
    # weights and anneal the learning rate to zero before stopping (training/anneal.py). False: stop there.
    anneal_on_stall: bool = False
    # With more than one process (torchrun, --nproc N): ddp keeps a whole model in every process and averages
    # gradients; fsdp (FSDP2 fully_shard) splits parameters, gradients and optimizer state between them.
    strategy: str = "ddp"
    optim: OptimConfig = field(default_factory=OptimConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        if isinstance(self.transfer, dict):
            self.transfer = TransferConfig(**self.transfer)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum_steps": self.grad_accum_steps,
                    "log_every_steps": self.log_every_steps}
        optional = {"valid_every_steps": self.valid_every_steps, "threads": self.threads,
                    "early_stopping_patience": self.early_stopping_patience}
        for name, value in {**positive, **{k: v for k, v in optional.items() if v is not None}}.items():
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be > 0 (got {value})")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ConfigError(f"clip_grad_norm must be > 0 (got {self.clip_grad_norm})")
        distributed.check_strategy(self.strategy)
        check_device(self.device, available=False)  # whether this machine has it: when a run starts
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be between 0 and 1, e.g. 0.999 (the weights of about the last"
                              f" 1 / (1 - decay) steps are averaged), or None for no average (got {self.ema_decay})")
        if self.monitor_mode not in (None, "min", "max"):
            raise ConfigError(f"monitor_mode must be min or max (got {self.monitor_mode!r})")
        if not self.valid_every_epoch and self.valid_every_steps is None:
            raise ConfigError("valid_every_epoch = false needs valid_every_steps (validation every N steps)")
        if self.transfer.unfreeze_at is not None and self.transfer.unfreeze_at > self.epochs:
            raise ConfigError(f"unfreeze_at {self.transfer.unfreeze_at} is after the last epoch ({self.epochs});"
                              " choose an epoch from 2 to epochs")


@dataclass
class FitResult:
    state: TrainState
    valid: dict[str, float]  # metrics of the last validation
    history: list[dict[str, Any]]


class Loader(Sized, Iterable[Any], Protocol):
    epoch: int
    position: int

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def fit(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
    train_loader: Loader,
    *,
    config: TrainConfig,
    valid_loader: Iterable[Any] | None = None,
    metrics_fn: MetricFn | None = None,
    checkpointer: Checkpointer | None = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_every_epoch: bool = True,
    trackers: Iterable[Tracker] = (),
    progress: Progress | None = None,
    resume: bool = False,
    stop_at_step: int | None = None,
    pretrained: Collection[str] = (),
) -> FitResult:
    """Train `model`; see the module docstring for the batch conventions.

    `resume` restores the newest valid checkpoint of `checkpointer` first. `stop_at_step` ends the
    run right after that optimizer step with a checkpoint (used to replay and verify a resume).
    `pretrained` names the parameters loaded from elsewhere (`config.transfer.backbone_lr_mult`).
    With `config.ema_decay`, validation, the best pick and the weights `model` ends with are the EMA's.
    """
    env = distributed.setup(config.device)  # joins torchrun's process group when there is one
    progress = progress if progress is not None and env.rank == 0 else Progress(quiet=True)
    trackers = list(trackers) if env.rank == 0 else []  # rank 0 alone reports
    device = distributed.device_for(config.device) or resolve_device(config.device)
    if config.deterministic:
        torch.use_deterministic_algorithms(True)
    if config.threads is not None or env.distributed:
        torch.set_num_threads(config.threads or env.threads)
    seed_everything(config.seed)
    model.to(device)

    accum = config.grad_accum_steps
    batches_per_epoch = len(train_loader)
    if env.distributed and getattr(train_loader, "world_size", 1) != env.world_size:
        raise ConfigError(f"{type(train_loader).__name__} (a streamed parquet table, or a Dataset read row by row) does not"
                          f" split its batches between {env.world_size} processes: train it in one process (--nproc 1),"
                          " or from data in memory (tables, images within the memory budget, tensors to torchkeep.fit)")
    if batches_per_epoch == 0:
        raise ConfigError(f"the training data gives no batch of {config.batch_size} rows (drop_last with too few rows?)")
    steps_per_epoch = math.ceil(batches_per_epoch / accum)
    state = TrainState(epochs=config.epochs)
    transfer = TransferPlan(model, config.transfer, pretrained)
    if transfer.active:
        transfer.apply()
    distributed.refuse_unsupported(config.strategy, ema=config.ema_decay is not None, transfer=transfer.active)
    wrapped = distributed.wrap(model, config.strategy, device)
    module = wrapped.module  # the model (one process, ddp) or its sharded copy (fsdp): stepped and checkpointed
    parameters = transfer.param_groups(config.optim.lr) if transfer.active else module.parameters()
    optimizer = build_optimizer(config.optim, parameters)
    scheduler = build_scheduler(config.optim, optimizer, steps_per_epoch * state.epochs)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay is not None else None
    evaluated = average.module if average is not None else module  # validated, best-picked and kept at the end
    share = distributed.eval_share(wrapped.strategy)  # (rank, world): each rank validates a share of the batches

    if resume and checkpointer is not None:
        step = None
        if transfer.unfreeze_epoch is not None and (saved := checkpointer.restore(restore_rng=False)) is not None:
            # Unfrozen before that checkpoint: its optimizer state has the unfrozen groups too.
            transfer.load_state_dict(saved.extra.get("transfer"), optimizer, scheduler)
            step = saved.step
        restored = checkpointer.restore(model=module, optimizer=optimizer, scheduler=scheduler, loader=train_loader,
                                        step=step)
        if restored is not None:
            state = TrainState.from_dict(restored.extra["train_state"])
            # Another number of processes: another global batch, so another number of steps per epoch.
            regrouped = restored.extra.get("world_size", 1) != env.world_size
            if state.epochs != config.epochs or regrouped:  # extended (or shortened) on resume: see extend_schedule
                done = train_loader.epoch * steps_per_epoch + train_loader.position // accum if regrouped else None
                scheduler = extend_schedule(config.optim, config.epochs, optimizer, state, steps_per_epoch, done)
            if average is not None:
                average.load_state_dict(restored.extra.get("ema"), f"{checkpointer.storage.uri}/{restored.name}")
            progress.message(f"resumed from {restored.name} (epoch {train_loader.epoch + 1}, "
                             f"batch {train_loader.position} of {batches_per_epoch})")

    monitor = config.monitor or "loss"
    higher = monitor in HIGHER_IS_BETTER if config.monitor_mode is None else config.monitor_mode == "max"
    restore_best = config.restore_best and valid_loader is not None
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = []
    last_saved = state.step if resume else -1
    validated_step = -1

    def log_event(event: dict[str, Any]) -> None:
        history.append({"step": state.step, **event})
        for tracker in trackers:
            tracker.log(event, state.step)

    def validate() -> None:
        nonlocal best_weights, validated_step
        if valid_loader is None or validated_step == state.step:
            return
        validated_step = state.step
        metrics = evaluate(evaluated, loss_fn, valid_loader, metrics_fn, device, share)
        train_mode()
        state.last_valid = metrics
        value = metrics.get(monitor)
        if value is None:
            raise ConfigError(f"monitor '{monitor}' is not a validation metric (have: {', '.join(metrics)})")
        improved = state.best_value is None or (value > state.best_value if higher else value < state.best_value)
        if improved:
            state.best_value, state.best_step, state.bad_evaluations = value, state.step, 0
            state.best_valid = metrics
            if restore_best:
                best_weights = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
                # The best weights must outlive a restart: checkpoint them (best-k retention keeps them).
                save()
        else:
            state.bad_evaluations += 1
            if config.early_stopping_patience and state.bad_evaluations >= config.early_stopping_patience:
                if config.anneal_on_stall and restore_best and state.anneal_start is None and load_best():
                    if average is not None:
                        average.module.load_state_dict(model.state_dict())
                    start_anneal(state, optimizer)
                    progress.message(f"step {state.step}: no better validation since step {state.best_step}; its weights"
                                     f" restored, learning rate annealed to 0 over {state.anneal_steps} steps")
                else:
                    state.stopped_early = True
        # Logged once its checkpoint (if it is the best yet) is saved: a tracker may end the run here (a study's
        # scheduler stopping a trial), and the run keeps the best weights it reached.
        log_event({"split": "valid", "epoch": train_loader.epoch, **metrics})

    def load_best() -> bool:
        """The best validation's weights into the model: from memory, else (resumed since) its checkpoint."""
        weights = best_weights
        if weights is None:
            try:
                best = checkpointer.restore(model=module, step=state.best_step, restore_rng=False)  # type: ignore[union-attr]
            except (CheckpointError, AttributeError) as error:
                log.warning("keeping the last weights: the best ones (step %s) are gone: %s", state.best_step, error)
                return False
            weights = ema_weights(best.extra if best else None) if average is not None else None
        if weights is not None:
            module.load_state_dict(weights)
        return True

    def save() -> None:
        nonlocal last_saved
        if checkpointer is None or last_saved == state.step:
            return
        # Every rank: the Checkpointer writes plain state from rank 0 and sharded state (fsdp) from all ranks,
        # and every rank agrees that the save succeeded (checkpoint/manager.py).
        checkpointer.save(
            state.step, model=module, optimizer=optimizer, scheduler=scheduler, loader=train_loader,
            epoch=train_loader.epoch, metrics={f"valid_{k}": v for k, v in state.last_valid.items()},
            extra={"train_state": state.to_dict(), "world_size": env.world_size,
                   **({"transfer": transfer.state_dict()} if transfer.active else {}),
                   **({"ema": average.state_dict()} if average is not None else {})},
        )
        last_saved = state.step

    def finish(valid: dict[str, float]) -> FitResult:
        """The model ends with the weights it was validated with: the average's, when there is one."""
        if average is not None:
            model.load_state_dict(average.weights())
        distributed.gather_into(model, wrapped)  # fsdp: the whole weights into the caller's model, every rank
        return FitResult(state=state, valid=valid, history=history)

    def train_mode() -> None:
        wrapped.forward_module.train()
        transfer.hold_frozen_norms()

    train_mode()
    per_epoch = config.valid_every_epoch  # else many short epochs: one bar, a line per validation
    if not per_epoch:
        progress.start_run(state.epochs, batches_per_epoch * state.epochs,
                           done=train_loader.epoch * batches_per_epoch + train_loader.position)
    while train_loader.epoch < state.epochs and not state.stopped_early:
        if unfrozen := transfer.maybe_unfreeze(train_loader.epoch, optimizer, scheduler):
            progress.message(f"epoch {train_loader.epoch + 1}: unfroze {len(unfrozen)} parameter tensor(s)"
                             f" ({', '.join(unfrozen[:4])}{', ...' if len(unfrozen) > 4 else ''})")
        if per_epoch:
            progress.start_epoch(train_loader.epoch, state.epochs, batches_per_epoch, done=train_loader.position)
        started = time.perf_counter()
        window_loss, window_batches, window_rows, window_start = torch.zeros((), device=device), 0, 0, started
        for batch in train_loader:
            position = train_loader.position  # 1-based index of this batch within the epoch
            group_start = (position - 1) // accum * accum
            group_size = min(accum, batches_per_epoch - group_start)
            final = position - group_start >= group_size  # the group's last micro-batch: the optimizer steps
            with wrapped.micro_batch(final):  # gradients synchronised between processes at the final one only
                output, target = forward(wrapped.forward_module, batch, device)
                loss = loss_fn(output, target)
                (loss / group_size).backward()
            window_loss += loss.detach()
            window_batches += 1
            window_rows += len(target)
            progress.update(len(target))
            if not final:
                continue
            if config.clip_grad_norm is not None:  # over DTensor gradients too (fsdp): the norm of the whole model
                nn.utils.clip_grad_norm_(module.parameters(), config.clip_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if average is not None:
                average.update(model)
            if state.anneal_start is not None:
                anneal_lr(state, optimizer)
            elif scheduler is not None:
                scheduler.step()
            state.step += 1
            if state.step == stop_at_step:
                save()
                if checkpointer is not None:
                    checkpointer.wait()
                return finish(state.last_valid)
            if state.step % config.log_every_steps == 0:
                now = time.perf_counter()
                mean_loss = (window_loss / window_batches).item()
                log_event({"split": "train", "epoch": train_loader.epoch, "loss": mean_loss,
                           "lr": optimizer.param_groups[0]["lr"], "rows_per_s": window_rows / (now - window_start)})
                progress.update(0, loss=mean_loss)
                window_loss.zero_()
                window_batches, window_rows, window_start = 0, 0, now
            if config.valid_every_steps and state.step % config.valid_every_steps == 0:
                validate()
                if not per_epoch:
                    progress.validated(state.step, steps_per_epoch * state.epochs, train_loader.epoch + 1,
                                       state.last_valid)
                if state.stopped_early:
                    break
            if annealed(state):
                validate()
                state.stopped_early = True
                break
            if checkpoint_every_steps and state.step % checkpoint_every_steps == 0 and position < batches_per_epoch:
                state.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                save()
        state.train_seconds += time.perf_counter() - started
        if window_batches:
            progress.update(0, loss=(window_loss / window_batches).item())
        last = train_loader.epoch >= state.epochs
        if not (config.valid_every_steps and state.step % config.valid_every_steps == 0) and (per_epoch or last):
            validate()
            if not per_epoch:
                progress.validated(state.step, steps_per_epoch * state.epochs, train_loader.epoch, state.last_valid)
        if per_epoch:
            progress.end_epoch({f"valid_{k}": v for k, v in state.last_valid.items()} or None)
        if checkpoint_every_epoch or state.stopped_early or last:
            save()
    if not per_epoch:
        progress.end_run()
    if checkpointer is not None:
        checkpointer.wait()
    if restore_best and state.best_step is not None and state.best_step != state.step and load_best():
        distributed.gather_into(model, wrapped)
        return FitResult(state=state, valid=state.best_valid, history=history)
    return finish(state.last_valid)
