"""Changes to the learning-rate schedule in the middle of a run: annealing after a stall, and a
longer (or shorter) budget given on resume.

Annealing after a stall is what early stopping does instead of stopping when it is asked to.
A one-cycle schedule sized for the whole budget is still near its peak when a small table stops
improving, so the best weights were never trained at a small learning rate. With annealing on, the
first stall (patience validations without a better one) restores the best weights and decays the
learning rate linearly from where it stands to zero over as many steps as the stall took; the
run then ends (at the end of that decay, or at a second stall) with the best validation of the
whole run. Its state lives in TrainState, so a run resumed in the middle of it anneals on exactly.
"""

from __future__ import annotations

import warnings

import torch

from torchkeep.training.optim import OptimConfig, build_scheduler
from torchkeep.training.state import TrainState


def start_anneal(state: TrainState, optimizer: torch.optim.Optimizer) -> None:
    """Begin the decay now, from the optimizer's current learning rates (one per param group)."""
    stall = state.step - (state.best_step or 0)
    state.anneal_start, state.anneal_steps = state.step, max(stall, 1)
    state.anneal_lr = [group["lr"] for group in optimizer.param_groups]
    state.bad_evaluations = 0


def anneal_lr(state: TrainState, optimizer: torch.optim.Optimizer) -> None:
    """Set the learning rates for the step after `state.step` (in place of the schedule's step)."""
    done = (state.step + 1 - state.anneal_start) / state.anneal_steps  # type: ignore[operator]
    for group, lr in zip(optimizer.param_groups, state.anneal_lr):
        group["lr"] = lr * max(0.0, 1.0 - done)


def annealed(state: TrainState) -> bool:
    """Whether the decay has reached zero."""
    return state.anneal_start is not None and state.step - state.anneal_start >= state.anneal_steps


def extend_schedule(config: OptimConfig, epochs: int, optimizer: torch.optim.Optimizer, state: TrainState,
                    steps_per_epoch: int, done: int | None = None) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A resumed run given another number of epochs: the schedule is rebuilt for the new total and moved
    to the step the run has reached, so the rest of the run follows the schedule of a run started with
    the new budget (identical to one with a constant schedule; one-cycle and cosine resume at the
    learning rate the longer schedule has at that step). Early stopping starts counting again, and an
    annealing after a stall is over: the longer schedule decides the learning rate again.

    Also a run resumed with another number of processes: the batch size is per process, so an epoch has
    another number of optimizer steps; `done` is the steps of the new size the run has covered."""
    for group in optimizer.param_groups:  # each group's configured rate, as when a run starts
        group["lr"] = group.get("max_lr", group.get("initial_lr", group["lr"]))  # one-cycle's peak; cosine's base
    scheduler = build_scheduler(config, optimizer, steps_per_epoch * epochs)
    if scheduler is not None:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": no update is due here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(state.step if done is None else done):
                scheduler.step()
    if epochs != state.epochs:
        state.epochs, state.stopped_early, state.bad_evaluations = epochs, False, 0
        state.anneal_start, state.anneal_steps, state.anneal_lr = None, 0, []
    return scheduler
