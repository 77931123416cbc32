"""The s3torchconnector backend against a real S3 endpoint: moto's server on 127.0.0.1, over HTTP.

The backend is chosen the way a user chooses it (TORCHKEEP_S3_BACKEND=s3torchconnector) and
configured only through the standard AWS environment and config file, here with path-style
addressing set in the AWS config file. Objects it writes are read back with boto3 and vice versa:
one bucket, two clients, the same bytes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from torchkeep import ConfigError, StorageError
from torchkeep.storage import open_storage

pytest.importorskip("s3torchconnector", reason="s3torchconnector is not installed: pip install 'torchkeep[s3torchconnector]'")

from torchkeep.storage.s3_connector import S3ConnectorStorage

MiB = 1 << 20


@pytest.fixture
def connector(s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Select the backend and path-style addressing as a user would: an env var and the AWS config file."""
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("TORCHKEEP_S3_BACKEND", "s3torchconnector")
    return s3


def open_in(s3, prefix: str = "run") -> tuple[S3ConnectorStorage, str]:
    bucket = s3.new_bucket()
    storage = open_storage(f"s3://{bucket}/{prefix}")
    assert isinstance(storage, S3ConnectorStorage)
    return storage, bucket


def test_the_environment_selects_the_backend_and_the_config_file_sets_path_style(connector) -> None:
    storage, _ = open_in(connector)
    assert storage.client.s3client_config.force_path_style
    assert storage.endpoint == connector.url


def test_an_unknown_backend_is_a_config_error(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHKEEP_S3_BACKEND", "s3fs")
    with pytest.raises(ConfigError, match="TORCHKEEP_S3_BACKEND must be one of boto3, s3torchconnector"):
        open_storage("s3://bucket/run")


def test_a_parameter_selects_the_backend_without_the_environment(s3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCHKEEP_S3_BACKEND", raising=False)
    bucket = s3.new_bucket()
    assert isinstance(open_storage(f"s3://{bucket}/run", s3_backend="s3torchconnector"), S3ConnectorStorage)
    assert type(open_storage(f"s3://{bucket}/run")).__name__ == "S3Storage"


@pytest.mark.parametrize("size", [0, 1000, 8 * MiB, 8 * MiB + 1, 21 * MiB + 7])
def test_objects_round_trip_and_boto3_reads_the_same_bytes(connector, size: int) -> None:
    storage, bucket = open_in(connector)
    data = os.urandom(size)
    storage.write("a/object.bin", data)
    assert storage.read("a/object.bin") == data
    assert connector.client().get_object(Bucket=bucket, Key="run/a/object.bin")["Body"].read() == data


def test_a_list_of_buffers_is_written_in_order_and_boto3_objects_are_read(connector) -> None:
    storage, bucket = open_in(connector)
    pieces = [os.urandom(3 * MiB), os.urandom(9 * MiB), b"", os.urandom(11)]
    storage.write("joined.bin", [memoryview(piece) for piece in pieces])
    assert storage.read("joined.bin") == b"".join(pieces)
    written_by_boto3 = os.urandom(12 * MiB)
    connector.client().put_object(Bucket=bucket, Key="run/other.bin", Body=written_by_boto3)
    assert storage.read("other.bin") == written_by_boto3


def test_list_exists_and_delete_under_a_prefix(connector) -> None:
    storage, bucket = open_in(connector)
    for key in ("checkpoints/step-1/a", "checkpoints/step-1/b", "checkpoints/step-2/a", "config.json"):
        storage.write(key, b"x")
    connector.client().put_object(Bucket=bucket, Key="elsewhere/x", Body=b"not under the prefix")
    assert storage.list() == ["checkpoints/step-1/a", "checkpoints/step-1/b", "checkpoints/step-2/a", "config.json"]
    assert storage.list("checkpoints/step-1") == ["checkpoints/step-1/a", "checkpoints/step-1/b"]
    assert storage.exists("config.json") and not storage.exists("nothing")
    storage.delete("checkpoints/step-1/a")
    storage.delete("never-written")  # deleting what is not there is not an error
    assert storage.list("checkpoints") == ["checkpoints/step-1/b", "checkpoints/step-2/a"]


def test_a_missing_bucket_is_named_by_every_verb(connector) -> None:
    storage = open_storage("s3://no-such-bucket-here/run")
    for verb in (lambda: storage.write("k", b"x"), lambda: storage.read("k"), lambda: storage.exists("k"),
                 lambda: storage.list(), lambda: storage.delete("k")):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-here' does not exist"):
            verb()


def test_a_missing_object_is_named(connector) -> None:
    storage, bucket = open_in(connector)
    with pytest.raises(StorageError, match=f"s3://{bucket}/run/missing.json: no such object"):
        storage.read("missing.json")


def test_an_unreachable_endpoint_is_one_clear_error(connector, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    storage = open_storage("s3://bucket/run")
    with pytest.raises(StorageError, match=f"cannot reach the S3 endpoint http://127.0.0.1:{port}"):
        storage.write("k", b"x")


def test_a_connection_cut_mid_upload_leaves_no_object_and_no_unfinished_upload(
    connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = connector.url.removeprefix("http://").split(":")
    proxy = FaultProxy((host, int(port))).start()
    try:
        bucket = connector.new_bucket()
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        storage = open_storage(f"s3://{bucket}/run")
        storage.write("kept.bin", b"before")
        proxy.cut_after_bytes = 1_000_000  # every new connection dies ~1 MB into what the client sends
        storage.client = type(storage.client)(storage.client.region, endpoint=proxy.url,
                                              s3client_config=storage.client.s3client_config)  # new connections
        with pytest.raises(StorageError, match=f"s3://{bucket}/run/cut.bin"):
            storage.write("cut.bin", os.urandom(24 * MiB))
        assert proxy.cuts >= 1
    finally:
        proxy.close()
    boto3 = connector.client()
    keys = [item["Key"] for item in boto3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["run/kept.bin"]
    assert boto3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
