"""The Ray a study runs on: an existing cluster (`address`), or a local Ray started for the study and shut down
after it, with the dashboard and usage statistics off and its temporary files inside the study directory.

A cluster is started with `ray start --head` on one machine and `ray start --address HEAD:6379` on the
others; `torchkeep tune --address auto` (on a cluster machine) or `--address HEAD:6379` joins it. Every
machine needs torchkeep and the data at the same path (or s3://).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torchkeep.errors import MissingExtraError

# Ray puts unix sockets under its temp dir (<temp>/session_<date>_<time>_<pid>/sockets/plasma_store, ~64
# characters below it) and unix socket paths are limited to 107 bytes: a longer temp dir fails at start.
MAX_TEMP_DIR_CHARS = 40


def import_ray(search: str = "random") -> Any:
    """ray (and optuna for search = "optuna"), or one line naming the pip command."""
    try:
        import ray
        from ray import tune  # noqa: F401 (ray[tune], not only ray core)
    except ImportError:
        raise MissingExtraError("ray[tune]", "tune") from None
    if search == "optuna":
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise MissingExtraError("optuna (for --search optuna)", "tune") from None
    return ray


def temp_dir_for(study_dir: str) -> tuple[str, bool]:
    """(Ray's temp dir, whether it is inside the study): STUDY/ray-tmp where its path is short enough for
    Ray's sockets, else a short directory under the system's temp dir named after the study."""
    inside = os.path.join(os.path.abspath(study_dir), "ray-tmp")
    if "://" not in study_dir and len(inside) <= MAX_TEMP_DIR_CHARS:
        return inside, True
    digest = hashlib.sha256(os.path.abspath(study_dir).encode()).hexdigest()[:8]
    root = tempfile.gettempdir() if len(tempfile.gettempdir()) <= MAX_TEMP_DIR_CHARS - 15 else "/tmp"
    return os.path.join(root, f"tk-ray-{digest}"), False


@contextmanager
def ray_session(study_dir: str, *, address: str | None, gpus: float, message: Any) -> Iterator[None]:
    """Ray for the length of a study: joined at `address`, else started here and shut down afterwards."""
    ray = import_ray()
    # Read by Ray when it starts (and by the processes it starts, which inherit the environment): no usage
    # statistics sent, trials keep the working directory, and no warning each time a trial's result makes Ray save the
    # study's state (it does, so that a resume finds every reported validation).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if ray.is_initialized():  # a caller's own Ray (the library used inside a Ray program): use it, leave it
        yield
        return
    temp, inside = temp_dir_for(study_dir)
    if address is not None:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        message(f"joined the Ray cluster at {address}: {ray.cluster_resources().get('CPU', 0):.0f} CPUs")
    else:
        if not inside:
            message(f"Ray's temporary files: {temp} (the study directory's path is too long for Ray's sockets)")
        os.makedirs(temp, exist_ok=True)
        if stopped := stop_leftovers(temp):
            message(f"stopped {len(stopped)} Ray process(es) left by the study's previous driver")
        ray.init(num_cpus=os.cpu_count() or 1, num_gpus=None if gpus else 0, include_dashboard=False,
                 _temp_dir=temp, logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    try:
        yield
    finally:
        ray.shutdown()
        if address is None:  # shutdown returns before every process of the local Ray has exited: none outlives us
            settle(temp)
        if address is None and not inside:  # Ray's logs stay in a study's ray-tmp, not in the system's temp dir
            shutil.rmtree(temp, ignore_errors=True)


def leftover_pids(temp_dir: str) -> list[int]:
    """Processes of a local Ray that used `temp_dir` and outlived their driver (killed, not shut down): they
    hold files of its sessions open. Linux (/proc) only; elsewhere none are found."""
    sessions, found = os.path.join(os.path.abspath(temp_dir), "session_"), []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            links = [os.readlink(os.path.join("/proc", entry, "fd", fd)) for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:  # gone, or another user's
            continue
        if any(link.startswith(sessions) for link in links):
            found.append(int(entry))
    return found


def settle(temp_dir: str, timeout_s: float = 10.0) -> None:
    """Wait up to `timeout_s` for the processes of a local Ray that was shut down to exit; stop the rest."""
    deadline = time.monotonic() + timeout_s
    while leftover_pids(temp_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_leftovers(temp_dir)


def stop_leftovers(temp_dir: str, timeout_s: float = 10.0) -> list[int]:
    """Stop the processes `leftover_pids` finds (SIGTERM, then SIGKILL after `timeout_s`); their pids."""
    pids = leftover_pids(temp_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
