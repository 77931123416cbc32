"""S3Storage against a real S3 endpoint: moto's server on 127.0.0.1, spoken to over HTTP by boto3.

Small part sizes (moto's minimum, 5 MiB, except the last part) make a 12 MiB object a real
multipart upload and a real set of ranged reads. Faults come from a real TCP proxy in front of the
server (tests/faultproxy.py) or a closed port; configuration problems from a `torchkeep` process
started with the environment a user would have.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from torchkeep import StorageError
from torchkeep.storage import open_storage
from torchkeep.storage.s3 import S3Storage

MiB = 1 << 20
PART = 5 * MiB  # moto's smallest part (all but the last)


def storage_in(s3, bucket: str, prefix: str = "run", **options) -> S3Storage:
    """An S3Storage with small parts on its own client (few retries: faults fail fast)."""
    client = options.pop("client", None) or s3.client()
    return S3Storage(f"s3://{bucket}/{prefix}", part_size=PART, client=client, **options)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """A user error: exit status 2 and one `error:` line on stderr, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def torchkeep_with_env(env: dict[str, str], *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m torchkeep ARGS` with exactly `env` (plus PATH and HOME), as a user's shell would run it."""
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(cwd), "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "torchkeep", *map(str, args)], cwd=cwd, env={**base, **env},
                          capture_output=True, text=True, timeout=120)


# -- round trips ---------------------------------------------------------------------------------


def test_small_object_round_trip(s3) -> None:
    storage = storage_in(s3, s3.new_bucket())
    storage.write("config.json", b'{"epochs": 2}')
    data = storage.read("config.json")
    assert data == b'{"epochs": 2}'
    assert isinstance(data, bytearray)


def test_empty_object_round_trip(s3) -> None:
    storage = storage_in(s3, s3.new_bucket())
    storage.write("empty", [])
    assert storage.exists("empty")
    assert storage.read("empty") == b""


def test_multipart_object_from_a_list_of_buffers_round_trips(s3) -> None:
    bucket = s3.new_bucket()
    storage = storage_in(s3, bucket)
    payload = os.urandom(12 * MiB + 123)
    view = memoryview(payload)
    # buffers that do not line up with the parts, as a streamed safetensors file's do not
    chunks = [view[:64], view[64 : 3 * MiB], view[3 * MiB : 11 * MiB + 5], view[11 * MiB + 5 :]]

    storage.write("checkpoints/step-000000001/model.safetensors", chunks)

    head = s3.client().head_object(Bucket=bucket, Key="run/checkpoints/step-000000001/model.safetensors")
    assert head["ContentLength"] == len(payload)
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 MiB, 5 MiB, the rest
    assert storage.read("checkpoints/step-000000001/model.safetensors") == payload  # ranged reads


def test_object_of_exactly_one_part_and_one_byte_more(s3) -> None:
    storage = storage_in(s3, s3.new_bucket())
    for size in (PART, PART + 1):
        payload = os.urandom(size)
        storage.write(f"object-{size}", memoryview(payload))
        assert storage.read(f"object-{size}") == payload


def test_list_exists_and_delete_under_a_prefix(s3) -> None:
    bucket = s3.new_bucket()
    storage = storage_in(s3, bucket, "runs/a")
    neighbour = storage_in(s3, bucket, "runs/ab")  # shares the string prefix "runs/a", not the folder
    for key in ["checkpoints/step-000000002/model.safetensors", "checkpoints/step-000000001/MANIFEST.json",
                "checkpoints/LATEST", "config.json"]:
        storage.write(key, key.encode())
    neighbour.write("config.json", b"another run")

    assert storage.list("checkpoints") == [
        "checkpoints/LATEST",
        "checkpoints/step-000000001/MANIFEST.json",
        "checkpoints/step-000000002/model.safetensors",
    ]
    assert storage.list() == storage.list("checkpoints") + ["config.json"]
    assert storage.list("nothing-here") == []
    assert neighbour.list() == ["config.json"]
    assert storage.exists("config.json") and not storage.exists("checkpoints")

    storage.delete("checkpoints/LATEST")
    storage.delete("checkpoints/never-written")  # not an error
    assert not storage.exists("checkpoints/LATEST")
    assert storage.list("checkpoints") == ["checkpoints/step-000000001/MANIFEST.json",
                                           "checkpoints/step-000000002/model.safetensors"]
    assert neighbour.read("config.json") == b"another run"


def test_open_storage_uses_the_standard_aws_environment(s3) -> None:
    bucket = s3.new_bucket()
    storage = open_storage(f"s3://{bucket}/runs/x/")  # AWS_ENDPOINT_URL etc. come from the environment
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.uri) == (bucket, "runs/x", f"s3://{bucket}/runs/x")

    storage.write("config.json", b"{}")
    body = s3.client().get_object(Bucket=bucket, Key="runs/x/config.json")["Body"].read()
    assert body == b"{}"
    assert open_storage(f"s3://{bucket}/runs").list() == ["x/config.json"]
    assert open_storage(f"s3://{bucket}").read("runs/x/config.json") == b"{}"  # a whole bucket works too


def test_an_s3_uri_without_a_bucket_is_refused() -> None:
    with pytest.raises(StorageError, match="expected s3://bucket/prefix"):
        open_storage("s3://")


def test_a_reader_never_sees_half_of_a_single_part_object_while_it_is_overwritten(s3) -> None:
    storage = storage_in(s3, s3.new_bucket())
    versions = [bytes([i]) * (2 * MiB) for i in range(2)]  # one PUT, one GET each
    storage.write("model.safetensors", versions[0])
    outcomes: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            data = bytes(storage.read("model.safetensors"))
            outcomes.append("whole" if data in versions else "torn")

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(10):
            storage.write("model.safetensors", versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert outcomes and set(outcomes) == {"whole"}


def test_a_slow_ranged_read_does_not_mix_two_versions_of_an_object(s3) -> None:
    """The first GET is slowed by a proxy; the object is overwritten while it is in flight; the rest
    of the object then comes in ranged GETs (this reader always splits), which must not mix versions."""
    bucket = s3.new_bucket()
    writer = storage_in(s3, bucket)
    old, new = b"\x01" * (2 * PART + 1024), b"\x02" * (2 * PART + 1024)  # the first GET plus ranged GETs
    writer.write("bundle/model.safetensors", old)
    host, port = s3.url.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port))).start()
    try:
        proxy.stall_s = 0.05  # the first GET trickles in until the overwrite is done
        reader = storage_in(s3, bucket, threads=1, single_stream_rate=float("inf"),
                            client=s3.client(endpoint_url=proxy.url))
        outcome: dict[str, object] = {}

        def read() -> None:
            try:
                outcome["data"] = bytes(reader.read("bundle/model.safetensors"))
            except StorageError as error:  # "the object changed while it was read" is a fine answer too
                outcome["error"] = error

        thread = threading.Thread(target=read)
        thread.start()
        deadline = time.monotonic() + 10
        while proxy.connections < 1 and time.monotonic() < deadline:  # the first GET is sent
            time.sleep(0.001)
        time.sleep(0.3)  # the GET has reached the server, which answers with the old bytes
        writer.write("bundle/model.safetensors", new)
        proxy.stall_s = 0.0
        thread.join(timeout=30)
    finally:
        proxy.close()
    assert proxy.connections >= 2, outcome.get("error")  # the read did go on in ranged GETs
    data = outcome.get("data", b"")
    whole = "error" in outcome or data in (old, new)
    assert whole, (
        f"the read mixed two versions: {data.count(1)} bytes of the old one, {data.count(2)} of the new one")


def test_a_read_is_split_into_parallel_ranges_only_when_its_connection_is_slow(s3) -> None:
    bucket = s3.new_bucket()
    payload = os.urandom(24 * MiB)
    storage_in(s3, bucket).write("state.safetensors", payload)
    host, port = s3.url.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port))).start()
    try:
        fast = storage_in(s3, bucket, single_stream_rate=10e6, client=s3.client(endpoint_url=proxy.url))
        assert fast.read("state.safetensors") == payload
        assert proxy.connections == 1  # one GET: loopback delivers far more than 10 MB/s
        proxy.stall_s = 0.02  # at most 64 KiB per 20 ms: ~3 MB/s, below the default 100 MB/s
        slow = storage_in(s3, bucket, client=s3.client(endpoint_url=proxy.url))
        assert slow.read("state.safetensors") == payload
        assert proxy.connections >= 1 + 4  # the first GET, then the rest in ranges of 5 MiB at most
    finally:
        proxy.close()


def test_a_dropped_connection_is_retried_and_the_upload_completes(s3) -> None:
    bucket = s3.new_bucket()
    host, port = s3.url.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port))).start()
    try:
        storage = storage_in(s3, bucket, client=s3.client(endpoint_url=proxy.url, max_attempts=4))
        payload = os.urandom(12 * MiB)
        proxy.cut_after_bytes = 1_000_000  # the first attempts of the parts die mid-body

        def heal() -> None:
            deadline = time.monotonic() + 10
            while proxy.cuts == 0 and time.monotonic() < deadline:
                time.sleep(0.0005)
            proxy.cut_after_bytes = None

        healer = threading.Thread(target=heal)
        healer.start()
        storage.write("model.safetensors", payload)
        healer.join()
    finally:
        proxy.close()
    assert proxy.cuts >= 1
    assert storage_in(s3, bucket).read("model.safetensors") == payload


# -- errors: one clear StorageError each ---------------------------------------------------------


def test_a_missing_bucket_is_named_when_writing_and_listing(s3) -> None:
    bucket = f"missing-{os.getpid()}-a"
    storage = storage_in(s3, bucket)
    with pytest.raises(StorageError, match=f"s3://{bucket}/run/config.json: bucket '{bucket}' does not exist"):
        storage.write("config.json", b"{}")
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        storage.write("model.safetensors", os.urandom(PART + 1))  # the multipart path
    with pytest.raises(StorageError, match=f"s3://{bucket}/run/checkpoints: bucket '{bucket}' does not exist"):
        storage.list("checkpoints")


def test_a_missing_bucket_is_named_when_reading(s3) -> None:
    bucket = f"missing-{os.getpid()}-b"
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        storage_in(s3, bucket).read("config.json")


def test_exists_in_a_missing_bucket_is_an_error_not_false(s3) -> None:
    bucket = f"missing-{os.getpid()}-c"
    with pytest.raises(StorageError, match=f"bucket '{bucket}' does not exist"):
        storage_in(s3, bucket).exists("config.json")


def test_a_missing_object_is_named(s3) -> None:
    bucket = s3.new_bucket()
    with pytest.raises(StorageError, match=f"s3://{bucket}/run/config.json: no such object"):
        storage_in(s3, bucket).read("config.json")


def test_an_unreachable_endpoint_is_one_clear_error(s3) -> None:
    url = closed_port_url()
    storage = storage_in(s3, "any-bucket", client=s3.client(endpoint_url=url, max_attempts=1))
    started = time.monotonic()
    for action in (lambda: storage.read("config.json"), lambda: storage.write("config.json", b"{}"),
                   lambda: storage.write("big", os.urandom(PART + 1)), lambda: storage.list(),
                   lambda: storage.exists("config.json"), lambda: storage.delete("config.json")):
        with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint {url} .*; check AWS_ENDPOINT_URL"):
            action()
    assert time.monotonic() - started < 20


def test_an_unreachable_endpoint_from_the_environment(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url()
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match=f"s3://bucket/run/run.json: cannot reach the S3 endpoint {url}"):
        open_storage("s3://bucket/run").read("run.json")


def test_cli_unreachable_endpoint_is_one_error_line(s3, tmp_path: Path) -> None:
    url = closed_port_url()
    env = {**s3.env, "AWS_ENDPOINT_URL": url, "AWS_MAX_ATTEMPTS": "1"}
    line = one_error_line(torchkeep_with_env(env, "checkpoints", "s3://bucket/x", cwd=tmp_path))
    assert f"cannot reach the S3 endpoint {url}" in line


def test_cli_without_credentials_is_one_error_line(s3, tmp_path: Path) -> None:
    env = {
        "AWS_ENDPOINT_URL": s3.url,  # never a request to the internet, whatever happens
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    line = one_error_line(torchkeep_with_env(env, "checkpoints", "s3://bucket/x", cwd=tmp_path))
    assert line == ("error: s3://bucket/x/checkpoints: no AWS credentials found"
                    " (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)")


def test_cli_missing_bucket_is_one_error_line(s3, torchkeep, tmp_path: Path) -> None:
    bucket = f"missing-{os.getpid()}-d"
    line = one_error_line(torchkeep("checkpoints", f"s3://{bucket}/run", cwd=tmp_path))
    assert line == f"error: s3://{bucket}/run/checkpoints: bucket '{bucket}' does not exist"

    line = one_error_line(torchkeep("train", "--run-dir", f"s3://{bucket}/r", "--epochs", 1, cwd=tmp_path))
    assert line == f"error: s3://{bucket}/r/run.json: bucket '{bucket}' does not exist"


def test_cli_resume_from_a_missing_bucket_names_the_bucket(s3, torchkeep, tmp_path: Path) -> None:
    bucket = f"missing-{os.getpid()}-e"
    line = one_error_line(torchkeep("train", "--resume", f"s3://{bucket}/r", cwd=tmp_path))
    assert f"bucket '{bucket}' does not exist" in line
