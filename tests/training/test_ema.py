"""An exponential moving average (EMA) of the weights: `ema_decay=0.9` in TrainConfig, torchkeep.train,
torchkeep.fit or `torchkeep train --ema-decay 0.9`.

The average is updated after every optimizer step and is what a run validates, keeps and bundles; the
checkpoints hold it beside the raw weights, so a resumed run ends bit for bit where an uninterrupted
one does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from test_resume import (
    Regressor,
    crashed_copy,
    fit_line_with_mid_epoch_validation,
    line,
)
from torch import nn

import torchkeep
from torchkeep import BatchLoader, Checkpointer, OptimConfig, TrainConfig
from torchkeep.api import Predictor
from torchkeep.config import RunConfig
from torchkeep.data.table import TableSchema
from torchkeep.errors import CheckpointError, ConfigError
from torchkeep.models.build import build_model
from torchkeep.training.loop import fit
from torchkeep.training.transfer import read_pretrained
from torchkeep.run.verify import verify_resume

pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")  # tests/conftest.py


# -- the setting -------------------------------------------------------------------------------


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5, -0.5])
def test_ema_decay_outside_zero_to_one_is_refused_with_the_fix(decay: float) -> None:
    with pytest.raises(ConfigError, match=rf"ema_decay must be between 0 and 1, e.g. 0.999 .*\(got {decay}\)"):
        TrainConfig(ema_decay=decay)
    with pytest.raises(ConfigError, match="ema_decay must be between 0 and 1"):
        RunConfig.from_dict({"train": {"ema_decay": decay}})


def test_ema_decay_is_a_setting_of_train_toml_and_the_python_api() -> None:
    assert TrainConfig().ema_decay is None  # off unless asked for
    assert RunConfig.from_dict({"train": {"ema_decay": 0.99}}).train.ema_decay == 0.99


def test_the_cli_refuses_a_bad_ema_decay_in_one_line(torchkeep, tmp_path: Path) -> None:
    result = torchkeep("train", "--ema-decay", "1.5", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert "ema_decay must be between 0 and 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_the_cli_trains_with_an_ema_and_saves_the_setting(torchkeep, tmp_path: Path) -> None:
    delays_table().write_csv(tmp_path / "delays.csv")
    result = torchkeep("train", "--data", "delays.csv", "--target", "late", "--epochs", 1, "--ema-decay", "0.9",
                       "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["ema_decay"] == 0.9
    last = Checkpointer(str(tmp_path / "run")).restore(restore_rng=False)
    assert last.extra["ema"]["steps"] == last.step


# -- the average itself --------------------------------------------------------------------------


SGD = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")


def test_the_average_is_decay_times_the_average_plus_the_rest_times_the_weights(tmp_path: Path) -> None:
    data = line(32)
    torch.manual_seed(0)
    model = Regressor()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=1, optim=SGD, device="cpu", ema_decay=0.5)
    with Checkpointer(str(tmp_path / "run"), async_save=False) as checkpointer:
        result = fit(model, nn.functional.mse_loss, BatchLoader(data, batch_size=8, shuffle=False), config=config,
                     checkpointer=checkpointer)
    assert result.state.step == 4

    by_hand = Regressor()
    by_hand.load_state_dict(start)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    average: dict[str, torch.Tensor] | None = None
    for first in range(0, 32, 8):
        optimizer.zero_grad()
        nn.functional.mse_loss(by_hand(data["x"][first : first + 8]), data["target"][first : first + 8]).backward()
        optimizer.step()
        weights = {k: v.detach().clone() for k, v in by_hand.state_dict().items()}
        # the first step copies the weights; every later one moves the average halfway (decay 0.5)
        average = weights if average is None else {k: 0.5 * average[k] + 0.5 * weights[k] for k in weights}
    raw = by_hand.state_dict()

    for name in raw:  # fit ends with the average; the raw weights moved on without it
        assert torch.allclose(model.state_dict()[name], average[name], atol=1e-6)
        assert not torch.allclose(model.state_dict()[name], raw[name], atol=1e-3)
    # The checkpoint: the raw weights (the optimizer's) in model.safetensors, the average in its state.
    restored = Checkpointer(str(tmp_path / "run")).restore(model=Regressor(), restore_rng=False)
    saved = load_file(tmp_path / "run" / "checkpoints" / "step-000000004" / "model.safetensors")
    assert all(torch.allclose(saved[name], raw[name], atol=1e-6) for name in raw)
    assert restored.extra["ema"]["steps"] == 4 and restored.extra["ema"]["decay"] == 0.5
    assert all(torch.equal(restored.extra["ema"]["weights"][name], model.state_dict()[name]) for name in raw)


class Normalized(nn.Module):
    """BatchNorm: its running statistics are averaged with the weights (use_buffers)."""

    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(x))


def test_batchnorm_running_statistics_are_averaged_too() -> None:
    data = line(64)
    data["x"] = data["x"] * 3 + 5  # statistics far from BatchNorm's start (mean 0, variance 1)
    torch.manual_seed(0)
    raw = Normalized()
    torch.manual_seed(0)
    averaged = Normalized()
    for model, decay in ((raw, None), (averaged, 0.9)):
        fit(model, nn.functional.mse_loss, BatchLoader(data, batch_size=8, shuffle=False),
            config=TrainConfig(epochs=1, optim=SGD, device="cpu", ema_decay=decay))
    # 8 steps: the average lags the raw model's running mean, yet has left the start behind
    assert not torch.allclose(averaged.norm.running_mean, raw.norm.running_mean, atol=1e-3)
    assert averaged.norm.running_mean.abs().min() > 0.5


def test_validation_early_stopping_and_the_best_pick_see_the_average() -> None:
    train_loader = BatchLoader(line(256), batch_size=32, seed=0)
    valid_loader = BatchLoader(line(64, seed=1), batch_size=64, shuffle=False)
    torch.manual_seed(0)
    model = Regressor()
    config = TrainConfig(epochs=3, optim=OptimConfig(lr=0.05, schedule="constant"), device="cpu", ema_decay=0.8)
    result = fit(model, nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader)
    # The model ends with the weights of the best validation, and those were the average's.
    assert torchkeep.evaluate(model, nn.functional.mse_loss, valid_loader)["loss"] == result.state.best_value


# -- resume --------------------------------------------------------------------------------------


def delays_table(rows: int = 600, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    carrier = rng.choice(["AA", "DL", "UA", "WN"], rows)
    hour = rng.integers(5, 23, rows)
    distance = rng.gamma(2.0, 400.0, rows)
    score = (carrier == "WN") * 0.8 + 0.08 * (hour - 14) - 0.001 * (distance - 800) + rng.normal(0, 1, rows)
    return pl.DataFrame({"carrier": carrier, "hour": hour, "distance": distance, "late": score > 0.3})


SETTINGS = {"target": "late", "epochs": 2, "batch_size": 64, "seed": 3, "deterministic": True, "hidden_sizes": [16],
            "dropout": 0.1, "every_steps": 1, "keep_last": 1_000, "quiet": True, "ema_decay": 0.9}
STEPS = 2 * 9  # 540 training rows (600 less 10% for validation) in batches of 64, for 2 epochs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """(data file, run directory, best step) of one run with an EMA and a checkpoint kept after every step."""
    root = tmp_path_factory.mktemp("ema")
    data = root / "delays.parquet"
    delays_table().write_parquet(data)
    result = torchkeep.train(str(data), run_dir=str(root / "full"), **SETTINGS)
    assert result.state.step == STEPS
    return data, root / "full", result.state.best_step


def bundle_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "bundle" / "model.safetensors")


@pytest.mark.parametrize("step", [4, 9, 13])  # mid-epoch 1, end of epoch 1, mid-epoch 2
def test_a_resumed_run_with_an_ema_ends_with_bit_identical_weights(uninterrupted, tmp_path: Path, step: int) -> None:
    _, run_dir, _ = uninterrupted
    copy = crashed_copy(run_dir, step, tmp_path / "crashed")
    torchkeep.train(resume=str(copy), quiet=True)

    expected, got = bundle_weights(run_dir), bundle_weights(copy)
    assert set(expected) == set(got)
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    last = f"step-{STEPS:09d}"
    state = {name: load_file(directory / "checkpoints" / last / "state.safetensors") for name, directory in
             (("full", run_dir), ("resumed", copy))}
    ema_keys = [key for key in state["full"] if key.startswith("extra.ema.")]
    assert ema_keys and all(torch.equal(state["full"][key], state["resumed"][key]) for key in ema_keys)


def test_verify_resume_compares_the_average_too(uninterrupted, tmp_path: Path) -> None:
    _, run_dir, _ = uninterrupted
    copy = crashed_copy(run_dir, STEPS, tmp_path / "run")
    report = verify_resume(str(copy), from_step=STEPS - 2)
    assert report["identical"], report["mismatched"]
    checkpoint = run_dir / "checkpoints" / f"step-{STEPS - 1:09d}"
    state = load_file(checkpoint / "state.safetensors")
    averaged = [key for key in state if key.startswith("extra.ema.")]
    optimizer = [key for key in state if key.startswith("optimizer")]
    assert averaged and report["tensors_compared"] == (len(load_file(checkpoint / "model.safetensors"))
                                                       + len(optimizer) + len(averaged))


def test_a_checkpoint_without_an_average_is_not_resumed_with_one(tmp_path: Path) -> None:
    def run(decay: float | None, resume: bool) -> None:
        torch.manual_seed(0)
        config = TrainConfig(epochs=1, optim=SGD, device="cpu", ema_decay=decay)
        with Checkpointer(str(tmp_path / "run"), keep_last=None) as checkpointer:
            fit(Regressor(), nn.functional.mse_loss, BatchLoader(line(32), batch_size=8, shuffle=False), config=config,
                checkpointer=checkpointer, checkpoint_every_steps=1, stop_at_step=2, resume=resume)

    run(decay=None, resume=False)
    with pytest.raises(CheckpointError, match="step-000000002: holds no EMA weights .*resume it with ema_decay unset"):
        run(decay=0.9, resume=True)


# -- what a run keeps ----------------------------------------------------------------------------


def test_the_bundle_and_a_checkpoint_only_run_predict_with_the_average(uninterrupted, tmp_path: Path) -> None:
    _, run_dir, best_step = uninterrupted
    schema = TableSchema.from_dict(json.loads((run_dir / "schema.json").read_text()))
    spec = json.loads((run_dir / "model.json").read_text())
    rows = delays_table(50, seed=9)

    def predicted_by_hand(step: int) -> pl.DataFrame:
        """What the average saved at `step` predicts, in a model a user builds from the run's files."""
        saved = Checkpointer(str(run_dir)).restore(step=step, restore_rng=False)
        raw = load_file(run_dir / "checkpoints" / saved.name / "model.safetensors")
        average = saved.extra["ema"]["weights"]
        assert saved.extra["ema"]["steps"] == step
        assert any(not torch.equal(raw[name], average[name]) for name in raw)  # not the raw weights
        model = build_model(spec["architecture"], spec["args"])
        model.load_state_dict(average)
        return Predictor(model, schema, {}, "by hand").predict(rows)

    # The bundle: the average at the best validation (restore_best, the table default).
    assert torchkeep.load(str(run_dir)).predict(rows).equals(predicted_by_hand(best_step))
    # A run that stopped before its bundle: the newest checkpoint's average.
    without_bundle = crashed_copy(run_dir, STEPS, tmp_path / "no-bundle")
    assert torchkeep.load(str(without_bundle)).predict(rows).equals(predicted_by_hand(STEPS))
    # --init-from such a run starts from that average too
    pretrained = read_pretrained(str(without_bundle))
    average = Checkpointer(str(run_dir)).restore(step=STEPS, restore_rng=False).extra["ema"]["weights"]
    assert pretrained.kind == f"checkpoint step-{STEPS:09d}"
    assert all(torch.equal(pretrained.weights[name], average[name]) for name in average)


def test_a_run_resumed_after_its_best_validation_ends_with_the_average_saved_there(tmp_path: Path) -> None:
    expected, best_step = fit_line_with_mid_epoch_validation(tmp_path / "full", ema_decay=0.7)
    assert best_step == 3
    best = Checkpointer(str(tmp_path / "full")).restore(step=best_step, restore_rng=False)
    assert all(torch.equal(expected.state_dict()[k], v) for k, v in best.extra["ema"]["weights"].items())

    resumed, _ = fit_line_with_mid_epoch_validation(crashed_copy(tmp_path / "full", 10, tmp_path / "crashed"), resume=True,
                                                     ema_decay=0.7)
    assert all(torch.equal(expected.state_dict()[k], v) for k, v in resumed.state_dict().items())
