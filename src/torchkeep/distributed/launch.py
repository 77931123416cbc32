"""Starting N worker processes per machine through torch's elastic launcher (torch.distributed.run).

`torchkeep train --nproc N` re-runs the same command as `torchrun --nproc-per-node N -m torchkeep
train ...`; the library's `train(..., nproc=N)` hands a function to `elastic_launch`. Either way the
elastic agent watches the workers: one that dies stops the others, and `max_restarts` starts them
all again (they resume from the run's last committed checkpoint). The launcher's modules are imported
when a launch happens, not with torchkeep.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torchkeep.errors import ConfigError, DistributedError


@dataclass(kw_only=True)
class Launch:
    nproc: int = 1  # worker processes on this machine
    nnodes: int = 1  # machines
    node_rank: int = 0  # this machine's index (c10d rendezvous may renumber them; rank 0 writes the run)
    rdzv_endpoint: str | None = None  # HOST:PORT where the machines meet; None: this machine alone
    max_restarts: int = 0  # times the workers are started again after one fails

    def __post_init__(self) -> None:
        for name in ("nproc", "nnodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be > 0 (got {getattr(self, name)})")
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts must be >= 0 (got {self.max_restarts})")
        if not 0 <= self.node_rank < self.nnodes:
            raise ConfigError(f"--node-rank must be in [0, --nnodes) (got {self.node_rank} of {self.nnodes})")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ConfigError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, the address of a machine of the job"
                              " where all of them meet (e.g. node 0's, with a free port)")
        if self.rdzv_endpoint is not None and not self.rdzv_endpoint.rpartition(":")[2].isdigit():
            raise ConfigError(f"--rdzv-endpoint must be HOST:PORT (got {self.rdzv_endpoint!r})")

    @property
    def needed(self) -> bool:
        """Whether this asks for more than today's one process."""
        return self.nproc > 1 or self.nnodes > 1

    def torchrun_args(self) -> list[str]:
        args = [f"--nproc-per-node={self.nproc}", f"--nnodes={self.nnodes}", f"--max-restarts={self.max_restarts}"]
        if self.rdzv_endpoint is None:
            return [*args, "--standalone"]
        return [*args, "--rdzv-backend=c10d", f"--rdzv-endpoint={self.rdzv_endpoint}", f"--node-rank={self.node_rank}",
                "--rdzv-id=torchkeep"]


if TYPE_CHECKING:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError


def failure_line(error: ChildFailedError, what: str) -> str:
    """One line for a failed job: which worker ended how."""
    rank, failure = error.get_first_failure()
    how = f"was killed by {failure.signal_name()}" if failure.exitcode < 0 else f"exited with status {failure.exitcode}"
    return f"{what}: worker rank {rank} {how}; the other workers were stopped"


def launch_command(launch: Launch, command: Sequence[str]) -> None:
    """Run `python -m torchkeep COMMAND...` in every worker process through torchrun; raises when one fails."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    # torch threads per worker are set by torchkeep (cores / local processes); this only quiets torchrun's notice
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        torchrun_main([*launch.torchrun_args(), "-m", "torchkeep", *command])
    except ChildFailedError as error:
        raise DistributedError(failure_line(error, f"torchkeep {command[0]}")) from None


def call(function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """What each worker process runs for `launch_function` (a module-level function: spawn pickles it)."""
    return function(**kwargs)


def launch_function(launch: Launch, function: Callable[..., Any], **kwargs: Any) -> dict[int, Any]:
    """`function(**kwargs)` in every worker process (pickled: module-level functions and plain data);
    {global rank: return value} of this machine's workers."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=launch.nnodes, max_nodes=launch.nnodes, nproc_per_node=launch.nproc, max_restarts=launch.max_restarts,
        rdzv_backend="c10d", rdzv_endpoint=launch.rdzv_endpoint or "localhost:0",
        run_id="torchkeep" if launch.rdzv_endpoint else str(uuid.uuid4()), start_method="spawn",
        rdzv_configs={"rank": launch.node_rank} if launch.rdzv_endpoint else {},
    )
    try:
        return elastic_launch(config, call)(function, kwargs)
    except ChildFailedError as error:
        raise DistributedError(failure_line(error, getattr(function, "__name__", "training"))) from None
