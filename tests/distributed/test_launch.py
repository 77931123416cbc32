"""`torchkeep train --nproc 2`: two worker processes through torch's elastic launcher, one run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from safetensors.torch import load_file

from torchkeep import load

NO_BATCH_NORM = '[model]\nbatch_norm = "none"\n'  # per-process batch statistics would differ from one process's


def test_two_processes_train_a_run_that_one_process_resumes(torchkeep, flights_csv, tmp_path):
    trained = torchkeep("train", "--data", flights_csv, "--target", "late", "--nproc", 2, "--epochs", 1, "--threads", 1,
                        "--batch-size", 32, "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert trained.stdout.count("run: run") == 1  # rank 0 alone reports
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["status"], run["world_size"], run["strategy"]) == ("complete", 2, "ddp")
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == ["rank-0.log", "rank-1.log"]
    listed = json.loads(torchkeep("runs", ".", "--json", cwd=tmp_path).stdout)
    assert (listed["world_size"], listed["strategy"]) == (2, "ddp")

    predicted = torchkeep("predict", "run", "--data", flights_csv, "--out", "preds.csv", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert len(pl.read_csv(tmp_path / "preds.csv")) == 300

    # The two-process checkpoint (global position in the data) continues in one process.
    resumed = torchkeep("train", "--resume", "run", "--epochs", 2, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["status"], run["world_size"], run["strategy"]) == ("complete", 1, None)
    epochs = {json.loads(line)["epoch"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line).get("split") == "valid"}
    assert epochs == {1, 2}


def weights(run: Path) -> dict:
    return load_file(run / "bundle" / "model.safetensors")


@pytest.mark.parametrize("strategy", ["fsdp"])
def test_fsdp_over_two_processes_ends_with_the_weights_of_one(torchkeep, flights_csv, tmp_path, strategy):
    """Global batch 2 x 32 in two processes = batch 64 in one: the same gradients, so the same model (the
    bundle holds the weights gathered from the shards)."""
    (tmp_path / "config.toml").write_text(NO_BATCH_NORM)
    common = ("train", "config.toml", "--data", flights_csv, "--target", "late", "--epochs", 2, "--quiet")
    sharded = torchkeep(*common, "--nproc", 2, "--strategy", strategy, "--batch-size", 32, "--run-dir", "two",
                        cwd=tmp_path)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    one = torchkeep(*common, "--batch-size", 64, "--threads", 1, "--run-dir", "one", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]

    two_weights, one_weights = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert two_weights.keys() == one_weights.keys()
    assert max((two_weights[k].float() - one_weights[k].float()).abs().max().item() for k in one_weights) < 1e-5
    rows = pl.read_csv(flights_csv)
    two, one = load(str(tmp_path / "two")).predict(rows), load(str(tmp_path / "one")).predict(rows)
    assert two["prediction"].to_list() == one["prediction"].to_list()
    for column in (c for c in one.columns if c != "prediction"):
        assert two[column].to_list() == pytest.approx(one[column].to_list(), abs=1e-5)

    # Its checkpoints are sharded (a shard per process, committed by the manifest) and resume at any world size:
    # further in one process, then further in three.
    latest = tmp_path / "two" / "checkpoints" / (tmp_path / "two" / "checkpoints" / "LATEST").read_text().strip()
    assert {"shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors", "MANIFEST.json"} <= \
        {p.name for p in latest.iterdir()}
    listed = json.loads(torchkeep("checkpoints", "two", "--verify", "--json", cwd=tmp_path).stdout)
    assert listed and all(c["status"] == "complete" for c in listed)
    for nproc, epochs in ((1, 3), (3, 4)):
        resumed = torchkeep("train", "--resume", "two", "--epochs", epochs, "--nproc", nproc, "--quiet", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        run = json.loads((tmp_path / "two" / "run.json").read_text())
        assert (run["status"], run["world_size"]) == ("complete", nproc)
    valid_epochs = [json.loads(line)["epoch"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
                    if json.loads(line).get("split") == "valid"]
    assert valid_epochs == [1, 2, 3, 4]


def test_the_library_launches_like_the_cli(make_table, tmp_path):
    """`torchkeep.train(..., nproc=2)`: the same run as `torchkeep train --nproc 2`, from Python."""
    from torchkeep import train

    result = train(make_table(rows=300), target="late", nproc=2, epochs=1, batch_size=32, threads=1,
                   run_dir=str(tmp_path / "run"), quiet=True)
    assert result.run_dir == str(tmp_path / "run") and result.bundle and 0 <= result.valid["accuracy"] <= 1
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["status"], run["world_size"], run["strategy"]) == ("complete", 2, "ddp")
