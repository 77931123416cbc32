"""A streamed run (parquet files, `--stream`) killed with SIGKILL and resumed ends with the weights of an
uninterrupted streamed run, bit for bit: the loader's state (epoch and batches handed out) finds the
window of row groups and the offset in it where the next batch starts. The killed run caches decoded row
groups on disk (RUN_DIR/stream-cache/, left partly written by the first kill, in the first epoch; deleted
when the run completes) and the reference run has no cache: the cache changes no weight."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from safetensors.torch import load_file

from kill_table import TRAIN_FLAGS, flights_frame
from test_kill import kill_when_past, latest_step, resumed_from, torchkeep_train

# 24 row groups of 250 rows; 2 held out for validation, 22 x 250 = 5,500 training rows in batches of 128
STEPS_PER_EPOCH = 43
EPOCHS = 2
# ~190 bytes a decoded row: a 64 KiB buffer shuffles ~340 rows at once, so batches span windows
STREAM_FLAGS = ["--stream", "--shuffle-buffer-mib", 0.0625]


def write_dataset(root: Path, rows: int = 6_000) -> None:
    frame = flights_frame(rows)
    for month in range(6):
        folder = root / f"month={month + 1}"
        folder.mkdir(parents=True)
        frame[month * 1000 : (month + 1) * 1000].write_parquet(folder / "part-0.parquet", row_group_size=250)


def test_a_streamed_run_killed_and_resumed_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    write_dataset(tmp_path / "flights")
    flags = [*TRAIN_FLAGS, *STREAM_FLAGS]
    reference = torchkeep_train("--data", "flights", "--run-dir", "reference", *flags, "--stream-cache-gib", 0,
                                cwd=tmp_path)
    run_dir = tmp_path / "run"
    process = torchkeep_train("--data", "flights", "--run-dir", "run", *flags, cwd=tmp_path)
    rng = random.Random(5)
    starts = []
    for kill in range(2):  # the second kill lands in the second epoch
        errors = kill_when_past(process, run_dir, latest_step(run_dir) + rng.choice([20, 30]),
                                delay_s=rng.uniform(0.0, 0.02))
        if kill > 0:
            starts.append(resumed_from(errors))
        cached = len(list((run_dir / "stream-cache" / "train").iterdir()))
        assert cached > 0 if kill == 0 else cached == 22  # the first kill: part of epoch 1; later, every row group
        process = torchkeep_train("--resume", "run", cwd=tmp_path)
    _, errors = process.communicate(timeout=180)
    assert process.returncode == 0, errors
    starts.append(resumed_from(errors))
    _, errors = reference.communicate(timeout=180)
    assert reference.returncode == 0, errors
    assert "streaming" in errors and "training binary model on 5,500 rows (500 for validation)" in errors

    expected = load_file(tmp_path / "reference" / "bundle" / "model.safetensors")
    got = load_file(run_dir / "bundle" / "model.safetensors")
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert different == [], f"killed-and-resumed weights differ: {different} (resumed from {starts})"
    assert latest_step(run_dir) == EPOCHS * STEPS_PER_EPOCH
    assert not (run_dir / "stream-cache").exists()  # deleted when the run completed
    assert not (tmp_path / "reference" / "stream-cache").exists()
