"""More than one process: torchrun's environment, the process group, DDP / FSDP2 wrapping, the launcher."""

from torchkeep.distributed.env import (DistEnv, all_true, barrier, broadcast_object, current, device_for,
                                       in_launched_worker, is_main, setup, teardown)
from torchkeep.distributed.launch import Launch, launch_command, launch_function
from torchkeep.distributed.wrap import (STRATEGIES, Wrapped, check_strategy, describe, eval_share, gather_into,
                                        gather_rows, refuse_unsupported, wrap)

__all__ = ["STRATEGIES", "DistEnv", "Launch", "Wrapped", "all_true", "barrier", "broadcast_object", "check_strategy",
           "current", "describe", "device_for", "eval_share", "gather_into", "gather_rows", "in_launched_worker",
           "is_main", "launch_command", "launch_function", "refuse_unsupported", "setup", "teardown",
           "wrap"]
