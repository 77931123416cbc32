"""Resume exactly: a run stopped at any step and continued ends with the very same weights.

The key test trains once without interruption, keeping a checkpoint at every step. For each of
several steps it then copies the run directory, deletes every checkpoint after that step (what a
crash right after it leaves behind), continues with `torchkeep.train(resume=copy)` and compares the
final bundle's weights with the uninterrupted run's, bit for bit.

Below it, fit() on its own: gradient accumulation, gradient clipping, early stopping, and a user's
own nn.Module and Dataset (through DatasetLoader), resumed the same way.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

import torchkeep
from torchkeep import BatchLoader, Checkpointer, DatasetLoader, OptimConfig, TrainConfig, evaluate
from torchkeep.training.loop import fit
from torchkeep.training.metrics import multiclass_metrics
from torchkeep.training.progress import Progress

EPOCHS = 3
BATCHES_PER_EPOCH = 17  # 1,080 training rows (1,200 less 10% for validation) in batches of 64


pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")  # tests/conftest.py


def delays_table(rows: int = 1_200, seed: int = 0) -> pl.DataFrame:
    """Strings (with nulls), a low-cardinality integer, floats (with nulls) and a binary target."""
    rng = np.random.default_rng(seed)
    carrier = rng.choice(["AA", "DL", "UA", "WN", "B6"], rows)
    hour = rng.integers(5, 23, rows)
    distance = rng.gamma(2.0, 400.0, rows)
    temperature = rng.normal(15, 8, rows)
    score = (carrier == "WN") * 0.8 + 0.08 * (hour - 14) - 0.001 * (distance - 800) + rng.normal(0, 1, rows)
    return pl.DataFrame(
        {
            "carrier": pl.Series([None if i % 13 == 0 else c for i, c in enumerate(carrier)], dtype=pl.String),
            "hour": hour,
            "distance": distance,
            "temperature": pl.Series([None if i % 11 == 0 else float(t) for i, t in enumerate(temperature)]),
            "late": score > 0.3,
        }
    )


SETTINGS = dict(
    target="late", epochs=EPOCHS, batch_size=64, seed=3, deterministic=True, hidden_sizes=[32, 16],
    dropout=0.1, every_steps=1, keep_last=1_000, quiet=True,
)


def bundle_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "bundle" / "model.safetensors")


def assert_bit_identical(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert set(expected) == set(got)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert different == [], f"weights differ from the uninterrupted run: {different}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, torchkeep.RunResult]:
    """(data file, run directory, result) of one run with a checkpoint kept after every step."""
    root = tmp_path_factory.mktemp("resume")
    data = root / "delays.parquet"
    delays_table().write_parquet(data)
    result = torchkeep.train(str(data), run_dir=str(root / "full"), **SETTINGS)
    return data, root / "full", result


def crashed_copy(run_dir: Path, step: int, to: Path) -> Path:
    """The run directory as a crash right after checkpoint `step` would have left it."""
    shutil.copytree(run_dir, to)
    for directory in (to / "checkpoints").glob("step-*"):
        if int(directory.name.removeprefix("step-")) > step:
            shutil.rmtree(directory)
    (to / "checkpoints" / "LATEST").write_text(f"step-{step:09d}")
    shutil.rmtree(to / "bundle", ignore_errors=True)  # a crashed run has none; a resumed one writes its own
    return to


def test_the_uninterrupted_run_kept_a_checkpoint_at_every_step(uninterrupted) -> None:
    _, run_dir, result = uninterrupted
    assert result.state.step == EPOCHS * BATCHES_PER_EPOCH
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run_dir / "checkpoints").glob("step-*"))
    assert steps == list(range(1, EPOCHS * BATCHES_PER_EPOCH + 1))
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "complete"


# 5, 26 and 45 are mid-epoch (epochs 1, 2 and 3); 17 is the end of the first epoch.
@pytest.mark.parametrize("step", [5, 17, 26, 45])
def test_resume_at_a_step_gives_bit_identical_final_weights(uninterrupted, tmp_path: Path, step: int) -> None:
    data, run_dir, expected = uninterrupted
    copy = crashed_copy(run_dir, step, tmp_path / "crashed")

    stream = io.StringIO()
    result = torchkeep.train(resume=str(copy), progress=Progress(stream=stream, rich=False))

    epoch, batch = divmod(step, BATCHES_PER_EPOCH)
    assert f"resumed from step-{step:09d} (epoch {epoch + 1}, batch {batch} of {BATCHES_PER_EPOCH})" in stream.getvalue()
    assert result.state.step == expected.state.step
    assert_bit_identical(bundle_weights(run_dir), bundle_weights(copy))
    assert result.valid == expected.valid
    assert torchkeep.load(str(copy)).predict(delays_table(50, seed=9)).equals(
        torchkeep.load(str(run_dir)).predict(delays_table(50, seed=9))
    )


def test_resume_after_a_crash_mid_write_ignores_the_half_written_checkpoint(uninterrupted, tmp_path: Path) -> None:
    """A crash while checkpoint 31 was being written: its files are there, its manifest is not."""
    _, run_dir, _ = uninterrupted
    copy = crashed_copy(run_dir, 31, tmp_path / "crashed")
    shutil.copytree(run_dir / "checkpoints" / "step-000000032", copy / "checkpoints" / "step-000000032")
    (copy / "checkpoints" / "step-000000032" / "MANIFEST.json").unlink()

    stream = io.StringIO()
    torchkeep.train(resume=str(copy), progress=Progress(stream=stream, rich=False))
    assert "resumed from step-000000031" in stream.getvalue()
    assert_bit_identical(bundle_weights(run_dir), bundle_weights(copy))


# -- fit() directly: any nn.Module, any loader --------------------------------------------------

SGD = OptimConfig(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def line(rows: int, slope: float = 2.0, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, generator=generator)
    return {"x": x, "target": slope * x.sum(dim=1, keepdim=True)}


def parameters_of(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_gradient_accumulation_steps_like_one_batch_of_twice_the_rows() -> None:
    data = line(56)
    torch.manual_seed(0)
    model = Regressor()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    # 7 batches of 8 rows, accumulated 2 by 2: optimizer steps on 16, 16, 16 and the last 8 rows
    loader = BatchLoader(data, batch_size=8, shuffle=False)
    config = TrainConfig(epochs=2, grad_accum_steps=2, optim=SGD, device="cpu")
    result = fit(model, nn.functional.mse_loss, loader, config=config)
    assert result.state.step == 2 * 4

    by_hand = Regressor()
    by_hand.load_state_dict(start)
    optimizer = torch.optim.SGD(by_hand.parameters(), lr=0.1)
    for _ in range(2):
        for first, last in ((0, 16), (16, 32), (32, 48), (48, 56)):
            optimizer.zero_grad()
            nn.functional.mse_loss(by_hand(data["x"][first:last]), data["target"][first:last]).backward()
            optimizer.step()
    assert torch.allclose(parameters_of(model), parameters_of(by_hand), atol=1e-6)

    torch.manual_seed(0)
    unaccumulated = Regressor()
    fit(unaccumulated, nn.functional.mse_loss, BatchLoader(data, batch_size=8, shuffle=False),
        config=TrainConfig(epochs=2, optim=SGD, device="cpu"))
    assert not torch.allclose(parameters_of(unaccumulated), parameters_of(model), atol=1e-3)


def test_clip_grad_norm_bounds_each_step() -> None:
    data = line(64, slope=100.0)  # large targets: large gradients
    config = dict(epochs=1, optim=OptimConfig(optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0,
                                              schedule="constant"), device="cpu")
    moves = {}
    for clip in (None, 0.01):
        torch.manual_seed(0)
        model = Regressor()
        before = parameters_of(model)
        result = fit(model, nn.functional.mse_loss, BatchLoader(data, batch_size=64, shuffle=False),
                     config=TrainConfig(clip_grad_norm=clip, **config))
        assert result.state.step == 1
        moves[clip] = (parameters_of(model) - before).norm().item()
    assert moves[None] > 1.0
    assert moves[0.01] == pytest.approx(0.01, rel=1e-4)  # lr 1 times a gradient clipped to norm 0.01


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights() -> None:
    """Validation wants the opposite slope: the better the model fits training, the worse it validates."""
    train_loader = BatchLoader(line(256, slope=2.0), batch_size=32, seed=0)
    valid_loader = BatchLoader(line(64, slope=-2.0, seed=1), batch_size=64, shuffle=False)
    torch.manual_seed(0)
    model = Regressor()
    config = TrainConfig(epochs=20, early_stopping_patience=2, optim=OptimConfig(lr=0.05, schedule="constant"),
                         device="cpu")
    result = fit(model, nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader)

    validations = [event for event in result.history if event["split"] == "valid"]
    assert result.state.stopped_early
    assert len(validations) == 3  # the best, then two without improvement
    assert train_loader.epoch == 3
    assert validations[1]["loss"] > validations[0]["loss"] and validations[2]["loss"] > validations[0]["loss"]
    assert result.state.best_step == 8 and result.state.step == 24
    # restore_best: the model ends with the weights of its best validation
    assert evaluate(model, nn.functional.mse_loss, valid_loader)["loss"] == result.state.best_value


class Blobs(Dataset):
    """A user's own Dataset in the seeds' style: one (features, label) pair per __getitem__."""

    def __init__(self, rows: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 3, (rows,), generator=generator)
        centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0]])
        self.features = centers[self.labels] + 0.5 * torch.randn(rows, 2, generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]


class Classifier(nn.Module):
    """A user's own model: takes the features tensor, returns logits."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def blob_loaders(seed: int = 0) -> tuple[DatasetLoader, DatasetLoader]:
    train_loader = DatasetLoader(Blobs(300, seed=0), batch_size=32, seed=seed, num_workers=0)
    valid_loader = DatasetLoader(Blobs(90, seed=1), batch_size=45, shuffle=False, num_workers=0)
    return train_loader, valid_loader


BLOB_CONFIG = TrainConfig(epochs=4, optim=OptimConfig(lr=0.05), device="cpu", deterministic=True)


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_a_users_own_module_and_dataset_train_through_fit() -> None:
    train_loader, valid_loader = blob_loaders()
    torch.manual_seed(0)
    model = Classifier()
    before = evaluate(model, nn.CrossEntropyLoss(), valid_loader, multiclass_metrics)

    result = fit(model, nn.CrossEntropyLoss(), train_loader, config=BLOB_CONFIG, valid_loader=valid_loader,
                 metrics_fn=multiclass_metrics)

    assert result.state.step == 4 * 10  # ceil(300 / 32) batches per epoch
    assert result.valid["accuracy"] > 0.9
    assert result.valid["loss"] < before["loss"] / 2
    assert {"loss", "accuracy", "log_loss"} <= set(result.valid)


def fit_blobs(run_dir: Path, *, resume: bool = False, epochs: int = 2) -> nn.Module:
    train_loader, valid_loader = blob_loaders()
    torch.manual_seed(123)  # a fresh process: whatever the model starts from, a resume overwrites it
    model = Classifier()
    config = TrainConfig(epochs=epochs, optim=OptimConfig(lr=0.05), device="cpu", deterministic=True)
    with Checkpointer(str(run_dir), keep_last=None) as checkpointer:
        fit(model, nn.CrossEntropyLoss(), train_loader, config=config, valid_loader=valid_loader,
            metrics_fn=multiclass_metrics, checkpointer=checkpointer, checkpoint_every_steps=1, resume=resume)
    return model


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
def test_fit_with_a_dataset_loader_resumes_mid_epoch_exactly(tmp_path: Path) -> None:
    """Within the epoch it stopped in, the slow path resumes on exactly the next batch too."""
    expected = fit_blobs(tmp_path / "full", epochs=1)
    copy = crashed_copy(tmp_path / "full", 4, tmp_path / "crashed")
    resumed = fit_blobs(copy, resume=True, epochs=1)
    assert_bit_identical(expected.state_dict(), resumed.state_dict())


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")
@pytest.mark.parametrize("step", [4, 10])  # mid-epoch 1; end of epoch 1
def test_fit_with_a_dataset_loader_resumes_exactly_across_epochs(tmp_path: Path, step: int) -> None:
    expected = fit_blobs(tmp_path / "full")
    copy = crashed_copy(tmp_path / "full", step, tmp_path / "crashed")
    resumed = fit_blobs(copy, resume=True)
    assert_bit_identical(expected.state_dict(), resumed.state_dict())


def fit_line_with_mid_epoch_validation(run_dir: Path, *, resume: bool = False,
                                       ema_decay: float | None = None) -> tuple[nn.Module, int]:
    """Validation every 3 steps, checkpoints every 2: the best validation (step 3) has no checkpoint."""
    train_loader = BatchLoader(line(400, slope=2.0), batch_size=32, seed=0)
    valid_loader = BatchLoader(line(100, slope=-2.0, seed=1), batch_size=100, shuffle=False)
    torch.manual_seed(0)
    model = Regressor()
    config = TrainConfig(epochs=2, valid_every_steps=3, optim=OptimConfig(lr=0.05, schedule="constant"), device="cpu",
                         ema_decay=ema_decay)
    with Checkpointer(str(run_dir), keep_last=None) as checkpointer:
        result = fit(model, nn.functional.mse_loss, train_loader, config=config, valid_loader=valid_loader,
                     checkpointer=checkpointer, checkpoint_every_steps=2, resume=resume)
    return model, result.state.best_step


def test_resume_ends_with_the_best_weights_when_validating_between_checkpoints(tmp_path: Path) -> None:
    expected, best_step = fit_line_with_mid_epoch_validation(tmp_path / "full")
    assert best_step == 3  # validation gets worse as training fits the opposite slope
    copy = crashed_copy(tmp_path / "full", 8, tmp_path / "crashed")
    resumed, _ = fit_line_with_mid_epoch_validation(copy, resume=True)
    assert_bit_identical(expected.state_dict(), resumed.state_dict())
