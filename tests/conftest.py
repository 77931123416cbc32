"""Shared test material: a small flights-like table written as real files, and the `torchkeep` command.

The table has every kind of column TableSchema must tell apart: strings (one with nulls), a
boolean, a low-cardinality integer, a wide integer, floats (one with nulls) and a binary target
that depends on the features, so that one epoch learns something.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch


def flights_like(rows: int = 300, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    dep_delay = rng.normal(10, 30, rows)
    temperature = rng.normal(15, 8, rows)
    temperature_missing = rng.random(rows) < 0.1
    gate = rng.choice(["A", "B", "C"], rows)
    gate_missing = rng.random(rows) < 0.1
    return pl.DataFrame(
        {
            "carrier": rng.choice(["AA", "DL", "UA", "WN"], rows),  # string
            "gate": pl.Series([None if m else g for g, m in zip(gate, gate_missing)], dtype=pl.String),
            "weekend": rng.random(rows) < 0.3,  # boolean
            "hour": rng.integers(5, 23, rows),  # 18 levels: categorical
            "distance": rng.integers(100, 5000, rows),  # thousands of levels: continuous
            "dep_delay": dep_delay,  # float
            "temperature": pl.Series(
                [None if m else float(t) for t, m in zip(temperature, temperature_missing)], dtype=pl.Float64
            ),
            "late": (dep_delay + rng.normal(0, 10, rows)) > 15,  # binary target
        }
    )


@pytest.fixture(scope="session")
def make_table() -> Callable[..., pl.DataFrame]:
    """`make_table(rows=300, seed=0)`: a fresh flights-like frame."""
    return flights_like


@pytest.fixture
def flights_csv(tmp_path: Path) -> Path:
    path = tmp_path / "flights.csv"
    flights_like().write_csv(path)
    return path


def run_torchkeep(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `torchkeep ARGS...` as a user would, in `cwd`; never raises on a non-zero exit."""
    env = {**os.environ, "COLUMNS": "160"}  # rich tables: a fixed width, whatever terminal runs pytest
    return subprocess.run(
        [sys.executable, "-m", "torchkeep", *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="session")
def torchkeep() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`torchkeep("train", "--epochs", 1, cwd=tmp_path)` -> CompletedProcess (stdout, stderr, returncode)."""
    return run_torchkeep


class S3Endpoint:
    """A real S3 endpoint on 127.0.0.1: moto's standalone server, spoken to over HTTP by boto3."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.env = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        self._count = 0

    def client(self, endpoint_url: str | None = None, max_attempts: int = 3):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url or self.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": max_attempts}, connect_timeout=5, read_timeout=20),
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket: tests never see each other's objects."""
        self._count += 1
        name = f"torchkeep-test-{os.getpid()}-{self._count}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3() -> S3Endpoint:
    """Starts moto's server on a free loopback port for the session; env points boto3 at it."""
    pytest.importorskip("moto.server")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = S3Endpoint(f"http://{host}:{port}")
    saved = {k: os.environ.get(k) for k in endpoint.env}
    os.environ.update(endpoint.env)
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture(scope="module")
def one_thread_and_restored_determinism():
    """For modules that compare weights bit for bit: one torch thread while they run (a reduction split
    over threads can round differently), and the deterministic-algorithms switch put back afterwards
    (runs with deterministic=True turn it on). Used as `pytestmark = pytest.mark.usefixtures(...)`."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
