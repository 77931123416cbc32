"""`torchkeep checkpoints RUN --verify-resume`: a self-test of exact resume on a user's own run.

Checkpoint A of a run is restored in a scratch copy, training is replayed up to the next checkpoint
B, and the replayed model and optimizer tensors are compared with B's bit for bit.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from typing import Any

import torch

from torchkeep.checkpoint import format as checkpoint_format
from torchkeep.checkpoint.format import MODEL_FILE, STATE_TENSORS_FILE
from torchkeep.checkpoint.shards import model_weights, state_tensors
from torchkeep.errors import CheckpointError, ConfigError
from torchkeep.predict.own_model import is_own_run
from torchkeep.run.train import train
from torchkeep.storage import open_storage
from torchkeep.storage.jsonfile import read_json, write_json


def verify_resume(run_dir: str, from_step: int | None = None, scratch: str | None = None) -> dict[str, Any]:
    """Self-test of exact resume: restore checkpoint A of a run in a scratch copy, replay training to
    the next checkpoint B, and compare model and optimizer tensors with B's bit for bit."""
    storage = open_storage(run_dir)
    if is_own_run(storage):
        raise ConfigError(f"{run_dir}: a run of torchkeep.fit; the replay rebuilds only torchkeep train runs (their data"
                          " is a file), a torchkeep.fit run's data lives in your script")
    read_json(storage, "config.json", run_dir)
    steps = [i.step for i in checkpoint_format.list_checkpoints(storage) if i.status == "complete"]
    if from_step is None and len(steps) >= 2:
        from_step = steps[-2]
    if from_step not in steps or steps.index(from_step) == len(steps) - 1:
        raise CheckpointError(f"{run_dir}: needs a complete checkpoint and a later one to compare with"
                              f" (complete: {steps or 'none'}; asked to start from {from_step})")
    to_step = steps[steps.index(from_step) + 1]
    own_scratch = scratch is None
    scratch = scratch or tempfile.mkdtemp(prefix="torchkeep-verify-")
    try:
        return _replay_and_compare(storage, run_dir, open_storage(scratch), scratch, from_step, to_step)
    finally:
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _replay_and_compare(storage: Any, run_dir: str, copy: Any, scratch: str, from_step: int, to_step: int) -> dict[str, Any]:
    for key in ("config.json", "schema.json", "model.json", "run.json", "transfer.json", "stream.json"):
        # transfer.json: only runs started from other weights; stream.json: only runs streamed from parquet files
        if key not in ("transfer.json", "stream.json") or storage.exists(key):
            copy.write(key, storage.read(key))
    # The replay is a self-test, not a run: no TensorBoard run or W&B run for it (JSONL only).
    config = json.loads(storage.read("config.json"))
    config["track"] = {"trackers": ["jsonl"]}
    write_json(copy, "config.json", config)
    start = f"{checkpoint_format.PREFIX}/{checkpoint_format.checkpoint_name(from_step)}"
    for key in storage.list(start):
        copy.write(key, storage.read(key))
    train(resume=scratch, quiet=True, stop_at_step=to_step)
    original = checkpoint_format.read_checkpoint(storage, checkpoint_format.checkpoint_name(to_step))[1]
    replayed = checkpoint_format.read_checkpoint(copy, checkpoint_format.checkpoint_name(to_step))[1]
    report: dict[str, Any] = {"run": run_dir, "from_step": from_step, "to_step": to_step, "mismatched": []}
    compared = 0
    for file_name, read, keep in ((MODEL_FILE, model_weights, lambda k: True),
                                  (STATE_TENSORS_FILE, state_tensors, lambda k: k.startswith(("optimizer", "extra.ema.")))):
        a, b = read(original, f"{run_dir}/{to_step}"), read(replayed, f"{scratch}/{to_step}")  # plain or sharded
        for key in sorted(k for k in set(a) | set(b) if keep(k)):
            compared += 1
            if key not in a or key not in b or a[key].dtype != b[key].dtype or not torch.equal(a[key], b[key]):
                report["mismatched"].append(f"{file_name}:{key}")
    report["tensors_compared"] = compared
    report["identical"] = not report["mismatched"]
    return report
