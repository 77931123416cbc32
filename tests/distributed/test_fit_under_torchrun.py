"""`torchkeep.fit` in a user's script started by `torchrun --nproc-per-node 2`: one run, trained by both
processes; validation split between the ranks gives the metrics of one process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchkeep

SCRIPT = Path(__file__).with_name("fit_script.py")
sys.path.insert(0, str(SCRIPT.parent))
import fit_script  # noqa: E402  (the script's data, model and settings, for the one-process run)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_fit_in_a_torchrun_script_and_validation_over_shards(tmp_path, strategy):
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(SCRIPT),
         str(tmp_path / "out.json"), str(tmp_path / "run"), strategy],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"out.json.rank{rank}").read_text()) for rank in range(2)]
    for rank in ranks:
        assert rank["world_size"] == 2
        # each rank evaluated its share of the 11 batches; gathered, they are the whole validation set
        assert rank["shared"] == pytest.approx(rank["whole"], rel=1e-6, abs=1e-7)
        assert rank["valid"] == pytest.approx(ranks[0]["valid"], rel=1e-6)
    assert ranks[0]["weights"] == ranks[1]["weights"]  # one model in both ranks

    # One process reading the same global batches (batch 50), with the same accumulation and clipping.
    one = fit_script.new_model()
    torchkeep.fit(one, *fit_script.data(), loss="bce", run_dir=str(tmp_path / "one"), quiet=True, threads=1,
                  **{**fit_script.SETTINGS, "batch_size": 50})
    difference = max((torch.tensor(ranks[0]["weights"][k]) - v.flatten()).abs().max().item()
                     for k, v in one.state_dict().items())
    assert difference < 1e-5
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "complete" and run["world_size"] == 2 and run["strategy"] == strategy
    assert ranks[0]["bundle"] and (tmp_path / "run" / "bundle" / "MANIFEST.json").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "logs").iterdir()) == ["rank-0.log", "rank-1.log"]
