"""Annealing after a stall (training/schedule.py): the best weights come back, the learning rate decays
linearly to zero over as many steps as the stall took, the run ends with the best validation of all, and a run
stopped in the middle of the decay resumes to bit-identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from torchkeep import BatchLoader, Checkpointer, OptimConfig, TrainConfig, evaluate
from torchkeep.training.loop import fit
from torchkeep.training.schedule import extend_schedule
from torchkeep.training.state import TrainState

from test_resume import Regressor, assert_bit_identical, crashed_copy, line

pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")  # tests/conftest.py


def noisy_line(rows: int, seed: int) -> dict[str, torch.Tensor]:
    data = line(rows, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    return {"x": data["x"], "target": data["target"] + 2.0 * torch.randn(rows, 1, generator=generator)}


def test_a_stall_brings_back_the_best_weights_and_anneals_before_stopping() -> None:
    """Validation wants the opposite slope: the best is the first validation, the stall comes two later."""
    train_loader = BatchLoader(line(256, slope=2.0), batch_size=32, seed=0)
    valid_loader = BatchLoader(line(64, slope=-2.0, seed=1), batch_size=64, shuffle=False)
    torch.manual_seed(0)
    model = Regressor()
    config = TrainConfig(epochs=20, early_stopping_patience=2, anneal_on_stall=True, log_every_steps=1,
                         optim=OptimConfig(lr=0.05, schedule="constant"), device="cpu")
    result = fit(model, nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader)

    state = result.state
    assert (state.best_step, state.anneal_start, state.anneal_steps) == (8, 24, 16)  # as long as the stall
    assert state.stopped_early and state.step == 40  # the decay's end, not the 20 epochs
    lrs = {event["step"]: event["lr"] for event in result.history if event["split"] == "train"}
    assert lrs[23] == lrs[24] == 0.05  # constant until the stall
    assert [lrs[step] for step in range(25, 41)] == pytest.approx([0.05 * (1 - k / 16) for k in range(1, 17)])
    validations = [event for event in result.history if event["split"] == "valid"]
    assert [event["step"] for event in validations] == [8, 16, 24, 32, 40]  # each step validated once
    # the decay started from the best weights: its first steps validate far better than step 24 did
    assert validations[3]["loss"] < validations[2]["loss"]
    assert evaluate(model, nn.functional.mse_loss, valid_loader)["loss"] == state.best_value


def test_without_annealing_a_stall_stops_the_run() -> None:
    train_loader = BatchLoader(line(256, slope=2.0), batch_size=32, seed=0)
    valid_loader = BatchLoader(line(64, slope=-2.0, seed=1), batch_size=64, shuffle=False)
    torch.manual_seed(0)
    config = TrainConfig(epochs=20, early_stopping_patience=2, optim=OptimConfig(lr=0.05, schedule="constant"),
                         device="cpu")
    result = fit(Regressor(), nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader)
    assert result.state.stopped_early and result.state.step == 24 and result.state.anneal_start is None


def fit_noisy(run_dir: Path, *, resume: bool = False) -> tuple[nn.Module, TrainState]:
    """Noisy targets at a high rate: the weights jitter until the decay settles them."""
    train_loader = BatchLoader(noisy_line(320, seed=0), batch_size=16, seed=0)
    valid_loader = BatchLoader(line(200, seed=1), batch_size=200, shuffle=False)
    torch.manual_seed(0)
    model = Regressor()
    config = TrainConfig(epochs=30, valid_every_steps=5, valid_every_epoch=False, early_stopping_patience=3,
                         anneal_on_stall=True, optim=OptimConfig(lr=0.3, schedule="onecycle"), device="cpu")
    with Checkpointer(str(run_dir), keep_last=None) as checkpointer:
        result = fit(model, nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader,
                     checkpointer=checkpointer, checkpoint_every_steps=1, resume=resume)
    return model, result.state


def test_the_decay_finds_a_better_validation_and_resumes_exactly_from_its_middle(tmp_path: Path) -> None:
    expected, state = fit_noisy(tmp_path / "full")
    assert state.anneal_start is not None and state.best_step > state.anneal_start  # the decay found the best
    middle = state.anneal_start + state.anneal_steps // 2
    resumed, resumed_state = fit_noisy(crashed_copy(tmp_path / "full", middle, tmp_path / "crashed"), resume=True)
    assert_bit_identical(expected.state_dict(), resumed.state_dict())
    assert (resumed_state.step, resumed_state.best_step) == (state.step, state.best_step)


def test_a_longer_budget_on_resume_ends_the_anneal() -> None:
    """--resume --epochs N after an annealed run: the longer schedule decides the learning rate again."""
    model = Regressor()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    state = TrainState(step=40, epochs=5, stopped_early=True, anneal_start=30, anneal_steps=10, anneal_lr=[0.01])
    scheduler = extend_schedule(OptimConfig(lr=0.01, schedule="constant"), 10, optimizer, state, steps_per_epoch=10)
    assert scheduler is None and state.anneal_start is None and not state.stopped_early and state.epochs == 10
