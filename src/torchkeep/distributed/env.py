"""The process's place in a torchrun job, and the process group around it.

torchrun (torch.distributed.run) starts every worker with RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/MASTER_PORT and TORCHELASTIC_RESTART_COUNT in its environment;
`DistEnv.read()` reads them. Without them a process is world 1, rank 0: today's single process,
and every function here is then a no-op (no process group is created).
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from torchkeep.errors import ConfigError

# A rank that waits longer than this in a collective gives up with an error instead of hanging: a worker
# killed mid-step leaves the others blocked, and the elastic agent also stops them when it sees the death.
COLLECTIVE_TIMEOUT_S = 120


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0  # times the elastic agent restarted the workers (--max-restarts)

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> DistEnv:
        environ = os.environ if environ is None else environ
        try:
            values = {key: int(environ[name]) for key, name in (
                ("rank", "RANK"), ("world_size", "WORLD_SIZE"), ("local_rank", "LOCAL_RANK"),
                ("local_world_size", "LOCAL_WORLD_SIZE"), ("restart_count", "TORCHELASTIC_RESTART_COUNT"))
                if name in environ}
        except ValueError as error:
            raise ConfigError(f"torchrun's environment holds a non-integer rank or size ({error})") from None
        env = cls(**values)
        if not 0 <= env.rank < env.world_size:
            raise ConfigError(f"RANK must be in [0, WORLD_SIZE) (got RANK {env.rank}, WORLD_SIZE {env.world_size})")
        return env

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def threads(self) -> int:
        """CPU threads for torch in each process: the cores shared by the processes of this machine."""
        return max(1, (os.cpu_count() or 1) // self.local_world_size)


def current() -> DistEnv:
    """This process's place: from the process group when one is up, else from the environment."""
    if dist.is_available() and dist.is_initialized():
        env = DistEnv.read()
        return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=env.local_rank,
                       local_world_size=env.local_world_size, restart_count=env.restart_count)
    return DistEnv.read()


def is_main() -> bool:
    """Rank 0: the one process that writes run files, bundles, trackers and progress."""
    return current().rank == 0


def in_launched_worker(environ: Mapping[str, str] | None = None) -> bool:
    """Whether torchrun (or `torchkeep train --nproc`) started this process."""
    environ = os.environ if environ is None else environ
    return "TORCHELASTIC_RUN_ID" in environ or "WORLD_SIZE" in environ


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: str | torch.device = "auto") -> DistEnv:
    """Join the job's process group when started by torchrun with more than one process (once; later
    calls and a group the user made are kept). gloo on CPU, nccl on CUDA, one GPU per local rank."""
    env = DistEnv.read()
    if not env.distributed or dist.is_initialized():
        return current()
    name = str(device)
    cuda = torch.cuda.is_available() if name == "auto" else torch.device(name).type == "cuda"
    if cuda:
        torch.cuda.set_device(env.local_rank)
    timeout = timedelta(seconds=COLLECTIVE_TIMEOUT_S)
    # The ranks meet in the launcher's store under a key prefix of their own attempt: workers restarted by
    # --max-restarts otherwise read the addresses the killed attempt left there and fail to connect.
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError(f"WORLD_SIZE is {env.world_size} but MASTER_ADDR / MASTER_PORT are not set: start the processes"
                          " with torchrun or `torchkeep train --nproc N`, which set them")
    tcp = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world_size,
                        is_master=not agent_store and env.rank == 0, timeout=timeout)
    store = dist.PrefixStore(f"torchkeep/attempt-{env.restart_count}", tcp)
    dist.init_process_group(backend="nccl" if cuda else "gloo", store=store, rank=env.rank, world_size=env.world_size,
                            timeout=timeout)
    atexit.register(teardown)  # whatever ends the process (an error included), before the interpreter is torn down
    return current()


def device_for(name: str) -> torch.device | None:
    """The device of this rank when `name` is auto or cuda on a multi-GPU job: cuda:LOCAL_RANK."""
    env = current()
    if env.distributed and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
        return torch.device("cuda", env.local_rank)
    return None


def teardown() -> None:
    """Destroy the process group while the interpreter is whole. The DDP / FSDP wrappers of a finished run
    are reference cycles that only the collector frees; freed later, during interpreter shutdown, the
    collectives' work they hold is destroyed from gloo's threads and the process aborts ("terminate
    called without an active exception", SIGABRT after a successful run). So: collect, destroy, collect."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(value: Any, source: int = 0) -> Any:
    """`value` of rank `source` on every rank (small picklable objects: a run directory's name)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def all_true(flag: bool) -> bool:
    """Whether `flag` holds on every rank (a failure on one rank fails every rank's step)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([0 if flag else 1])
    dist.all_reduce(value)
    return int(value.item()) == 0
