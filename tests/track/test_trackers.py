"""Trackers as a run uses them: fit() logs to JSONL, TensorBoard and W&B (offline) through
build_trackers, and each sink is read back with its own reader: json lines, TensorBoard's
EventAccumulator, the records of W&B's .wandb file. Then the bad cases: unknown names, missing
packages, an unwritable directory, and a tracker that fails mid-run (disk full)."""

from __future__ import annotations

import errno
import json
import logging
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import torchkeep
from torchkeep.errors import ConfigError, MissingExtraError, StorageError
from torchkeep.storage import open_storage
from torchkeep.track import Guarded, JsonlTracker, TrackConfig, build_trackers, close_trackers
from torchkeep.track.events import scalars
from torchkeep.training.loop import fit
from torchkeep.training.metrics import binary_metrics

EPOCHS, BATCH, LOG_EVERY = 2, 16, 2
CONFIG = {"train": {"epochs": EPOCHS, "batch_size": BATCH, "monitor": "roc_auc", "monitor_mode": "max",
                    "optim": {"lr": 0.01}}, "model": {"hidden_sizes": [8]}, "data": {"target": "y", "path": None}}


class Recorder:
    """A tracker that keeps what it is given (the reference the real sinks are compared with)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict]] = []

    def log(self, metrics: dict, step: int) -> None:
        self.events.append((step, dict(metrics)))

    def close(self) -> None:
        pass


class Logistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def small_fit(trackers: list) -> torchkeep.FitResult:
    """Two epochs of a logistic regression on 160 generated rows: 10 steps per epoch, a train event
    every 2 steps, a validation at each epoch end."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, generator=generator)
    y = (x[:, 0] - x[:, 1] + 0.3 * torch.randn(200, generator=generator) > 0).float()
    train = torchkeep.BatchLoader({"x": x[:160], "target": y[:160]}, BATCH, shuffle=True, seed=0)
    valid = torchkeep.BatchLoader({"x": x[160:], "target": y[160:]}, 64, shuffle=False)
    config = torchkeep.TrainConfig(epochs=EPOCHS, batch_size=BATCH, log_every_steps=LOG_EVERY)
    return fit(Logistic(), nn.BCEWithLogitsLoss(), train, config=config, valid_loader=valid,
               metrics_fn=binary_metrics, trackers=trackers)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> tuple[Path, Recorder, list]:
    """small_fit() with JSONL + TensorBoard + W&B offline and a Recorder, all closed afterwards."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("wandb", reason="wandb is not installed: pip install 'torchkeep[wandb]'")
    run_dir = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        env.setenv("WANDB_SILENT", "true")
        env.setenv("WANDB_DIR", str(run_dir / "wandb-home"))
        trackers = build_trackers(["tensorboard", "wandb", "jsonl"], str(run_dir), CONFIG)
        recorder = Recorder()
        small_fit([*trackers, recorder])
        close_trackers(trackers)
    return run_dir, recorder, trackers


def test_a_run_uses_jsonl_plus_the_trackers_it_names_each_once(tracked_run):
    _, _, trackers = tracked_run

    assert [t.name for t in trackers] == ["jsonl", "tensorboard", "wandb"]
    assert not any(t.failed for t in trackers)


def test_metrics_jsonl_holds_every_event_that_was_logged(tracked_run):
    run_dir, recorder, _ = tracked_run

    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert [line.pop("step") for line in lines] == [step for step, _ in recorder.events]
    assert all(line.pop("time") > 0 for line in lines)
    assert lines == [event for _, event in recorder.events]
    assert sum(r["split"] == "train" for r in lines) == EPOCHS * 10 // LOG_EVERY
    assert sum(r["split"] == "valid" for r in lines) == EPOCHS


def test_tensorboard_event_file_has_the_scalars_with_their_steps(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, recorder, _ = tracked_run
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    expected: dict[str, list[tuple[int, float]]] = {}
    for step, event in recorder.events:
        for name, value in scalars(event).items():
            expected.setdefault(name, []).append((step, value))

    assert {"loss/train", "loss/valid", "lr", "rows_per_s", "valid/accuracy", "valid/roc_auc", "valid/log_loss"} <= tags
    for name, points in expected.items():
        logged = [(e.step, e.value) for e in accumulator.Scalars(name)]
        assert [s for s, _ in logged] == [s for s, _ in points], name
        assert [v for _, v in logged] == pytest.approx([v for _, v in points], rel=1e-6), name
    assert len(expected["loss/train"]) == 10 and len(expected["loss/valid"]) == 2


def test_tensorboard_gets_hyperparameters_and_final_metrics_for_the_hparams_tab(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir, recorder, _ = tracked_run
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    best = max((e for _, e in recorder.events if e["split"] == "valid"), key=lambda e: e["roc_auc"])

    assert start.hparams["train.epochs"].number_value == EPOCHS
    assert start.hparams["train.optim.lr"].number_value == 0.01
    assert start.hparams["model.hidden_sizes"].string_value == "8"
    assert "data.path" not in start.hparams  # None is left out
    metrics = {m.name.tag for m in experiment.metric_infos}
    assert metrics == {"final/loss", "final/accuracy", "final/roc_auc", "final/log_loss"}
    # final = the best validation by the monitored metric (the weights the run ends with)
    assert accumulator.Scalars("final/roc_auc")[-1].value == pytest.approx(best["roc_auc"], rel=1e-6)


def wandb_records(run_dir: Path) -> list:
    """The protobuf records of an offline W&B run: its .wandb file is a LevelDB-style log
    (7-byte header, 32 KiB blocks, records split into FULL / FIRST / MIDDLE / LAST chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = next(run_dir.glob("offline-run-*/run-*.wandb")).read_bytes()
    assert data[:4] == b":W&B"
    block, position, pending, records = 32768, 7, b"", []
    while position + 7 <= len(data):
        if block - position % block < 7:  # block trailer
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += block - position % block
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL, LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key(item) -> str:
    """A logged name: W&B stores "loss/train" as the nested key ["loss", "train"]."""
    return item.key or "/".join(item.nested_key)


def test_wandb_offline_run_has_the_config_and_the_logged_keys(tracked_run):
    run_dir, recorder, trackers = tracked_run
    wandb_dir = run_dir / "wandb-home" / "wandb"
    records = wandb_records(wandb_dir)
    config = {i.key: json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "run"
              for i in r.run.config.update}
    history = [{key(i): json.loads(i.value_json) for i in r.history.item} for r in records
               if r.WhichOneof("record_type") == "history"]
    summary = {key(i): json.loads(i.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for i in r.summary.update}

    assert trackers[2].tracker.directory.startswith(str(wandb_dir / "offline-run-"))
    assert config["train"]["epochs"] == EPOCHS and config["model"]["hidden_sizes"] == [8]
    keys = set().union(*history)
    assert {"loss/train", "loss/valid", "lr", "rows_per_s", "valid/roc_auc", "valid/accuracy"} <= keys
    assert sorted({row["_step"] for row in history}) == sorted({step for step, _ in recorder.events})
    assert "final/roc_auc" in summary


def test_unknown_tracker_is_a_config_error_naming_the_known_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown tracker 'tensorbord' \(known: jsonl, tensorboard, wandb\)"):
        build_trackers(["tensorbord"], str(tmp_path))
    with pytest.raises(ConfigError, match="unknown tracker 'mlflow'"):
        TrackConfig(trackers=["mlflow"])
    with pytest.raises(ConfigError, match="list of names"):
        torchkeep.RunConfig.from_dict({"track": {"trackers": "tensorboard"}})
    assert torchkeep.RunConfig.from_dict({"track": {"trackers": ["wandb", "wandb"]}}).track.trackers == ["wandb"]
    assert not (tmp_path / "metrics.jsonl").exists()


@pytest.mark.parametrize(("name", "module", "extra"), [("tensorboard", "torch.utils.tensorboard", "track"),
                                                       ("wandb", "wandb", "wandb")])
def test_missing_package_names_the_extra(tmp_path, monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import` now raises ImportError

    with pytest.raises(MissingExtraError, match=rf"pip install 'torchkeep\[{extra}\]'"):
        build_trackers([name], str(tmp_path))


def test_unwritable_log_directory_is_one_storage_error(tmp_path):
    pytest.importorskip("tensorboard")
    (tmp_path / "a-file").write_text("not a directory")

    with pytest.raises(StorageError, match=r"tensorboard: cannot write logs to .*a-file/run/tensorboard"):
        build_trackers(["tensorboard"], str(tmp_path / "a-file" / "run"))


def test_tensorboard_disk_full_is_reported_once_and_training_completes(tmp_path, monkeypatch, caplog, make_table):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", disk_full)
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        result = torchkeep.train(make_table(300), target="late", epochs=2, batch_size=32, log_every_steps=2,
                                 trackers=["tensorboard"], run_dir=str(tmp_path / "run"), quiet=True)

    warnings = [r.getMessage() for r in caplog.records if "tracker failed" in r.getMessage()]
    assert warnings == ["tensorboard tracker failed while logging (OSError: [Errno 28] No space left on device);"
                        " training goes on without it"]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "complete" and result.state.epochs == 2
    events = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum('"valid"' in line for line in events) == 2  # JSONL went on


def test_guarded_tracker_stops_calling_a_failed_tracker(caplog):
    class Failing(Recorder):
        def log(self, metrics, step):
            super().log(metrics, step)
            raise OSError(errno.EIO, "Input/output error")

    failing = Failing()
    guarded = Guarded(failing, "flaky")
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        for step in range(5):
            guarded.log({"loss": 1.0}, step)
        guarded.close()

    assert len(failing.events) == 1 and guarded.failed
    assert len(caplog.records) == 1 and "flaky tracker failed" in caplog.records[0].getMessage()


def test_jsonl_tracker_writes_one_object_per_event(tmp_path):
    tracker = JsonlTracker(open_storage(str(tmp_path)))
    tracker.log({"split": "train", "loss": 0.5}, 3)
    tracker.log({"split": "valid", "loss": 0.4, "roc_auc": 0.9}, 4)
    tracker.close()

    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in line.items() if k != "time"} for line in lines] == [
        {"step": 3, "split": "train", "loss": 0.5}, {"step": 4, "split": "valid", "loss": 0.4, "roc_auc": 0.9}]


def test_object_store_run_writes_tensorboard_locally_and_says_where(s3, caplog):
    pytest.importorskip("tensorboard")
    run_dir = f"s3://{s3.new_bucket()}/runs/a"

    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        trackers = build_trackers(["tensorboard"], run_dir)
        for tracker in trackers:
            tracker.log({"split": "train", "loss": 0.5}, 1)
        close_trackers(trackers)

    [warning] = [r.getMessage() for r in caplog.records if r.name == "torchkeep"]
    local = Path(warning.split(" are written locally to ")[1].split(" (")[0])
    assert warning.startswith(f"tensorboard logs of {run_dir} are written locally to ")
    assert list((local / "tensorboard").glob("events.out.tfevents.*"))
    shutil.rmtree(local)
    assert s3.client().get_object(Bucket=run_dir.split("/")[2], Key="runs/a/metrics.jsonl")["Body"].read()
