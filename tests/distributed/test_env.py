"""DistEnv: a process's place in a torchrun job, read from the environment torchrun gives it."""

from __future__ import annotations

import pytest

from torchkeep.distributed import DistEnv, Launch, in_launched_worker
from torchkeep.errors import ConfigError


def test_torchruns_environment_is_read_and_one_process_is_world_one():
    env = DistEnv.read({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                        "TORCHELASTIC_RESTART_COUNT": "1", "TORCHELASTIC_RUN_ID": "x"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.restart_count) == (3, 4, 1, 2, 1)
    assert env.distributed and env.threads >= 1
    alone = DistEnv.read({})
    assert (alone.rank, alone.world_size, alone.distributed) == (0, 1, False)
    assert in_launched_worker({"TORCHELASTIC_RUN_ID": "x"}) and not in_launched_worker({})
    with pytest.raises(ConfigError, match="RANK must be in"):
        DistEnv.read({"RANK": "2", "WORLD_SIZE": "2"})


def test_launch_settings_are_checked_and_passed_to_torchrun():
    assert not Launch().needed
    assert Launch(nproc=2).torchrun_args() == ["--nproc-per-node=2", "--nnodes=1", "--max-restarts=0", "--standalone"]
    two_nodes = Launch(nproc=1, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400", max_restarts=2)
    assert "--rdzv-endpoint=10.0.0.1:29400" in two_nodes.torchrun_args() and "--node-rank=1" in two_nodes.torchrun_args()
    with pytest.raises(ConfigError, match="--rdzv-endpoint HOST:PORT"):
        Launch(nnodes=2)
    with pytest.raises(ConfigError, match="--node-rank"):
        Launch(nnodes=2, node_rank=2, rdzv_endpoint="h:1")
    with pytest.raises(ConfigError, match="--nproc must be > 0"):
        Launch(nproc=0)


def test_the_workers_run_the_command_without_the_launchers_flags(capsys):
    from torchkeep.cli import main
    from torchkeep.cli.train import worker_args

    typed = ["train", "--data", "f.csv", "--nproc", "2", "--nnodes=1", "--strategy", "fsdp", "--max-restarts", "1",
             "--rdzv-endpoint", "h:1", "--node-rank", "0", "--epochs", "2"]
    assert worker_args(typed) == ["train", "--data", "f.csv", "--strategy", "fsdp", "--epochs", "2"]

    assert main(["train", "--nproc", "2", "--max-restarts", "1"]) == 2  # restarts resume a run: it needs a name
    error = capsys.readouterr().err
    assert error.startswith("error: --max-restarts") and "--run-dir" in error
