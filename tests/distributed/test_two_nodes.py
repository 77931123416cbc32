"""Two "machines" on 127.0.0.1: two launcher invocations, one process each, meeting at a c10d rendezvous
endpoint, train one run (the run directory is shared, as it must be between real machines)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_launchers_with_nnodes_2_train_one_run(flights_csv, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torchkeep", "train", "--data", str(flights_csv), "--target", "late", "--epochs", "1",
             "--batch-size", "32", "--threads", "1", "--run-dir", "run", "--quiet", "--nnodes", "2", "--node-rank",
             str(node), "--nproc", "1", "--rdzv-endpoint", endpoint],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ},
        )
        for node in (0, 1)
    ]
    outputs = [node.communicate(timeout=120) for node in nodes]
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    assert sum(stdout.count("run: run") for stdout, _ in outputs) == 1  # one run, reported by rank 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["status"], run["world_size"], run["strategy"]) == ("complete", 2, "ddp")
    assert (tmp_path / "run" / "bundle" / "MANIFEST.json").exists()
