"""A real `torchkeep serve` process on 127.0.0.1, started and stopped by the tests.

`trained_run` trains a tiny run on the flights-like table (one epoch, a second or two);
`start_server(run, "--strict", ...)` starts `python -m torchkeep serve RUN --port FREE_PORT ...`
as a user would, waits until /health answers 200 and returns a `ServerProcess`.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests

TARGET = "late"
STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    def __init__(self, source: Path | str, *args: str, cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Output to files, not pipes: a server that logs a lot must never block on a full pipe.
        self.stdout_path, self.stderr_path = cwd / f"serve-{self.port}.out", cwd / f"serve-{self.port}.err"
        with self.stdout_path.open("w") as stdout, self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "torchkeep", "serve", str(source), "--port", str(self.port), *args],
                cwd=cwd, stdout=stdout, stderr=stderr,
            )

    def wait_until_healthy(self) -> ServerProcess:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"torchkeep serve exited with {self.process.returncode}: {self.stderr_path.read_text()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"torchkeep serve did not become healthy in {STARTUP_TIMEOUT_S} s")

    def post(self, body: Any, **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/predict", json=body, timeout=30, **kwargs)

    def counters(self) -> dict[str, int]:
        return requests.get(f"{self.url}/health", timeout=10).json()

    def stop(self, timeout_s: float = 30) -> tuple[int, str, str]:
        """SIGTERM, then (exit status, stdout, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.returncode, self.stdout_path.read_text(), self.stderr_path.read_text()


@pytest.fixture(scope="session")
def feature_rows(make_table: Callable[..., pl.DataFrame]) -> Callable[[int, int], list[dict[str, Any]]]:
    """`feature_rows(rows, seed)`: raw rows as a client sends them (feature columns, no target)."""
    return lambda rows, seed: make_table(rows, seed=seed).drop(TARGET).to_dicts()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, make_table: Callable[..., pl.DataFrame]) -> Path:
    """A tiny finished run (one epoch on 300 flights-like rows) with its bundle."""
    import torchkeep

    run_dir = tmp_path_factory.mktemp("serve") / "run"
    # Standard scaling: a value near the float64 limit then makes the model's output non-finite, the case
    # the in-batch error path is tested with (robust scaling clips it: test_extreme_values_are_clipped).
    torchkeep.train(make_table(300), target=TARGET, run_dir=str(run_dir), epochs=1, quiet=True, scaling="standard",
                    numeric_encoding="none")
    assert (run_dir / "bundle" / "bundle.json").is_file()
    return run_dir


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """`start_server(source, *flags, wait=True)`; every server still running is stopped at the end."""
    started: list[ServerProcess] = []
    cwd = tmp_path_factory.mktemp("serve-cwd")

    def start(source: Path | str, *args: str, wait: bool = True) -> ServerProcess:
        server = ServerProcess(source, *args, cwd=cwd)
        started.append(server)
        return server.wait_until_healthy() if wait else server

    yield start
    for server in started:
        server.stop()

