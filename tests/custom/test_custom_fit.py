"""torchkeep.fit on a user's own nn.Module: tensors, a Dataset or a DataLoader in; the run directory,
checkpoints, metrics and bundle out; stopped at any step and resumed, the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from own_models import BlobDataset, SmallImageNet, TwoInputs, blobs
from torch.utils.data import DataLoader

import torchkeep
from torchkeep.errors import ConfigError, DataError
from torchkeep.training.metrics import multiclass_metrics

pytestmark = [pytest.mark.filterwarnings("ignore:'set_vital' is deprecated"),  # torchdata on torch 2.13
              pytest.mark.usefixtures("one_thread_and_restored_determinism")]  # tests/conftest.py
SETTINGS = {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 1, "deterministic": True, "quiet": True}


def model() -> SmallImageNet:
    torch.manual_seed(0)
    return SmallImageNet()


def weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_identical(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    assert set(expected) == set(got)
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_fit_on_tensors_trains_and_keeps_a_run(tmp_path: Path) -> None:
    images, labels = blobs(600, seed=0)
    valid = blobs(150, seed=1)
    net = model()
    before = torchkeep.evaluate(net, torch.nn.CrossEntropyLoss(), [valid], multiclass_metrics)

    result = torchkeep.fit(net, (images, labels), valid, run_dir=str(tmp_path / "run"), every_steps=10, **SETTINGS)

    assert result.model is net
    assert result.state.step == 2 * 19  # ceil(600 / 32) batches per epoch
    assert result.valid["accuracy"] > 0.9 > before["accuracy"]
    assert result.valid["loss"] < before["loss"] / 4
    run = tmp_path / "run"
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    spec = json.loads((run / "model.json").read_text())
    assert spec["args"] == {"import": "own_models:SmallImageNet", "args": {}}
    assert spec["loss"] == "cross_entropy" and spec["task"] == "multiclass"  # inferred from int64 labels
    assert spec["inputs"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": [None, 1, 4, 4]}]
    steps = sorted(int(p.name.removeprefix("step-")) for p in (run / "checkpoints").glob("step-*"))
    assert steps[-1] == 38 and all(s % 10 == 0 or s in (19, 38) for s in steps)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["split"] == "valid"] == [1, 2]
    assert result.bundle == f"{run}/bundle" and (run / "bundle" / "model.safetensors").exists()


def test_a_dataloader_is_rebuilt_with_its_own_settings(tmp_path: Path) -> None:
    """The same Dataset as a Dataset (batch_size from the settings) and as a shuffling DataLoader of
    batch 32: both train through DatasetLoader with the run's seed, so they end with the same weights."""
    valid = BlobDataset(150, seed=1)
    settings = {k: v for k, v in SETTINGS.items() if k != "batch_size"}
    from_dataset = torchkeep.fit(model(), BlobDataset(600, seed=0), valid, run_dir=str(tmp_path / "a"),
                                 batch_size=32, **settings)
    loader = DataLoader(BlobDataset(600, seed=0), batch_size=32, shuffle=True)
    from_loader = torchkeep.fit(model(), loader, DataLoader(valid, batch_size=50), run_dir=str(tmp_path / "b"),
                                **settings)

    assert from_dataset.valid["accuracy"] > 0.9
    assert from_loader.state.step == from_dataset.state.step == 2 * 19
    assert_identical(weights(from_dataset.model), weights(from_loader.model))
    assert from_loader.valid == pytest.approx(from_dataset.valid)


def test_a_dict_of_tensors_calls_the_model_by_name(tmp_path: Path) -> None:
    images, labels = blobs(400, seed=0)
    hours = torch.randint(0, 24, (400,), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    result = torchkeep.fit(TwoInputs(), {"pixels": images, "hour": hours, "target": labels},
                           run_dir=str(tmp_path / "run"), **SETTINGS)
    assert result.valid == {}  # no validation data
    predictor = torchkeep.load(str(tmp_path / "run"))
    inputs = {"pixels": images[:20], "hour": hours[:20]}
    assert torch.equal(predictor.predict(inputs), result.model.eval()(**inputs))


@pytest.mark.parametrize("kind", ["tensors", "dataset", "dataloader"])
def test_stopped_mid_epoch_and_resumed_gives_the_same_weights(tmp_path: Path, kind: str) -> None:
    def data() -> object:
        if kind == "tensors":
            return blobs(300, seed=0)
        dataset = BlobDataset(300, seed=0)
        return dataset if kind == "dataset" else DataLoader(dataset, batch_size=32, shuffle=True)

    valid = blobs(90, seed=1)
    expected = torchkeep.fit(model(), data(), valid, run_dir=str(tmp_path / "full"), **SETTINGS)
    run_dir = str(tmp_path / "stopped")
    stopped = torchkeep.fit(model(), data(), valid, run_dir=run_dir, stop_at_step=13, **SETTINGS)  # epoch 2, batch 3
    assert stopped.bundle == "" and stopped.state.step == 13

    torch.manual_seed(99)  # other initial weights: the checkpoint replaces them
    resumed = torchkeep.fit(SmallImageNet(), data(), valid, run_dir=run_dir, resume=True, **SETTINGS)

    assert resumed.state.step == expected.state.step == 20
    assert_identical(weights(expected.model), weights(resumed.model))
    assert resumed.valid == expected.valid
    assert json.loads(Path(run_dir, "run.json").read_text())["status"] == "complete"


def test_resume_keeps_the_settings_and_the_data_of_the_run(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    data = blobs(100, seed=0)
    torchkeep.fit(model(), data, run_dir=run_dir, stop_at_step=2, **SETTINGS)

    with pytest.raises(ConfigError, match="run directory exists.*resume=True"):
        torchkeep.fit(model(), data, run_dir=run_dir, **SETTINGS)
    with pytest.raises(ConfigError, match="epochs was 2 when the run started, now 5"):
        torchkeep.fit(model(), data, run_dir=run_dir, resume=True, **{**SETTINGS, "epochs": 5})
    with pytest.raises(DataError, match="90 rows, but the run .* started on 100"):
        torchkeep.fit(model(), blobs(90, seed=0), run_dir=run_dir, resume=True, **SETTINGS)
    with pytest.raises(DataError, match="dataset now, but the run .* started on tensors"):
        torchkeep.fit(model(), BlobDataset(100, seed=0), run_dir=run_dir, resume=True, **SETTINGS)
    with pytest.raises(ConfigError, match="a run of your own model; continue it with torchkeep.fit"):
        torchkeep.train(resume=run_dir)


def test_a_resume_of_an_empty_run_directory_starts_the_run(tmp_path: Path) -> None:
    result = torchkeep.fit(model(), blobs(100, seed=0), run_dir=str(tmp_path / "new"), resume=True, **SETTINGS)
    assert result.state.step == 2 * 4 and result.bundle


def test_the_loss_is_inferred_only_where_the_targets_leave_no_doubt(tmp_path: Path) -> None:
    images, labels = blobs(64, seed=0)
    with pytest.raises(ConfigError, match="all 64 targets are 0.0 or 1.0: pass loss='bce'.*or loss='mse'"):
        torchkeep.fit(model(), (images, (labels == 1).float()), run_dir=str(tmp_path / "a"), **SETTINGS)

    class OneLogit(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1))  # [N, 1] against targets [N]: bce and mse fit the shapes

    binary = torchkeep.fit(OneLogit(), (images, labels == 1), (images, labels == 1), run_dir=str(tmp_path / "b"),
                           **SETTINGS)  # booleans: bce, binary metrics
    assert {"accuracy", "roc_auc", "log_loss"} <= set(binary.valid)
    regression = torchkeep.fit(OneLogit(), (images, labels * 1.5), (images, labels * 1.5),
                               run_dir=str(tmp_path / "c"), **SETTINGS)
    assert {"rmse", "mae", "r2"} <= set(regression.valid)
    with pytest.raises(ConfigError, match=r"'cross_entropy' needs one logit per class .* gave \[32, 1\]"):
        torchkeep.fit(OneLogit(), (images, labels), run_dir=str(tmp_path / "d"), **SETTINGS)


def test_a_loss_and_metrics_of_ones_own(tmp_path: Path) -> None:
    images, labels = blobs(128, seed=0)
    calls = []

    def top_class_share(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        calls.append(len(targets))
        return {"share": (outputs.argmax(1) == 0).float().mean().item()}

    result = torchkeep.fit(model(), (images, labels), (images, labels), loss=torch.nn.CrossEntropyLoss(),
                           metrics=top_class_share, run_dir=str(tmp_path / "run"), **SETTINGS)
    assert set(result.valid) == {"loss", "share"} and calls == [128, 128]


def test_settings_are_checked(tmp_path: Path) -> None:
    data = blobs(64, seed=0)
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        torchkeep.fit(model(), data, run_dir=str(tmp_path / "a"), epoch=3)
    with pytest.raises(ConfigError, match="batch_size must be > 0"):
        torchkeep.fit(model(), data, run_dir=str(tmp_path / "b"), batch_size=0)
    with pytest.raises(ConfigError, match="expected a Dataset, a DataLoader, an \\(inputs, target\\) pair.*got str"):
        torchkeep.fit(model(), "images/", run_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="train_data: expected an \\(inputs, target\\) pair \\(got a list of 3\\)"):
        torchkeep.fit(model(), [*data, data[1]], run_dir=str(tmp_path / "c"))
    with pytest.raises(ConfigError, match="loss 'hinge'"):
        torchkeep.fit(model(), data, loss="hinge", run_dir=str(tmp_path / "d"))
    with pytest.raises(ConfigError, match="own sampler or batch_sampler"):
        sampler = torch.utils.data.WeightedRandomSampler([1.0] * 64, 64)
        torchkeep.fit(model(), DataLoader(BlobDataset(64, 0), batch_size=8, sampler=sampler), run_dir=str(tmp_path / "e"))
    assert not any((tmp_path / name).exists() for name in "abcde")  # nothing written for a refused run


def test_settings_reach_the_loop_and_the_trackers(tmp_path: Path) -> None:
    """Early stopping and TensorBoard by keyword: validation labels shifted by one class get worse as
    training fits the true ones, so the run stops after one validation without improvement."""
    pytest.importorskip("tensorboard")
    images, labels = blobs(320, seed=0)
    result = torchkeep.fit(model(), (images, labels), (images, (labels + 1) % 3), run_dir=str(tmp_path / "run"),
                           early_stopping_patience=1, monitor="loss", trackers=["tensorboard"],
                           **{**SETTINGS, "epochs": 6})
    assert result.state.stopped_early and result.state.step == 2 * 10
    assert result.state.best_step == 10  # and the model ends with the weights of that validation
    assert any((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
