"""LocalStorage: real files under tmp_path, read back through the Storage protocol.

Every write is atomic (temp file, fsync, rename): a reader sees the old object or the new one, and
an unfinished write leaves nothing that `list` shows.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from torchkeep import StorageError
from torchkeep.storage import open_storage
from torchkeep.storage.local import LocalStorage

MiB = 1 << 20


def test_small_object_round_trip(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    storage.write("config.json", b'{"epochs": 2}')

    data = storage.read("config.json")
    assert data == b'{"epochs": 2}'
    assert isinstance(data, bytearray)  # writable: tensors decoded from it need no copy
    assert (tmp_path / "run" / "config.json").read_bytes() == b'{"epochs": 2}'


def test_a_list_of_buffers_is_written_in_order_as_one_file(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    payload = os.urandom(12 * MiB)
    view = memoryview(payload)
    chunks = [view[:100], view[100 : 5 * MiB + 3], view[5 * MiB + 3 :]]

    storage.write("checkpoints/step-000000001/model.safetensors", chunks)

    assert storage.read("checkpoints/step-000000001/model.safetensors") == payload


def test_empty_object_round_trip(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    storage.write("empty", b"")
    assert storage.exists("empty")
    assert storage.read("empty") == b""


def test_overwrite_replaces_the_whole_object_and_leaves_no_temp_files(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    storage.write("LATEST", b"step-000000010")
    storage.write("LATEST", b"step-000000020")
    assert storage.read("LATEST") == b"step-000000020"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["LATEST"]


def test_a_reader_never_sees_half_an_object(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    versions = [bytes([i]) * (4 * MiB) for i in range(2)]
    storage.write("model.safetensors", versions[0])
    seen: set[bytes] = set()
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            data = bytes(storage.read("model.safetensors"))
            seen.add(data if data in versions else b"torn:" + data[:8] + data[-8:])

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        for i in range(20):
            storage.write("model.safetensors", versions[i % 2])
    finally:
        done.set()
        reader.join()
    assert seen <= set(versions)


def test_list_exists_and_delete_under_a_prefix(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    for key in ["checkpoints/step-000000001/MANIFEST.json", "checkpoints/step-000000001/model.safetensors",
                "checkpoints/step-000000002/model.safetensors", "checkpoints/LATEST", "config.json"]:
        storage.write(key, key.encode())
    # what a write killed before its rename leaves: a hidden temp file, never listed
    (tmp_path / "run" / "checkpoints" / "step-000000002" / ".MANIFEST.json.tmp-123").write_bytes(b"{")

    assert storage.list("checkpoints") == [
        "checkpoints/LATEST",
        "checkpoints/step-000000001/MANIFEST.json",
        "checkpoints/step-000000001/model.safetensors",
        "checkpoints/step-000000002/model.safetensors",
    ]
    assert storage.list("checkpoints/step-000000002") == ["checkpoints/step-000000002/model.safetensors"]
    assert storage.list("no-such-prefix") == []
    assert len(storage.list()) == 5
    assert storage.exists("checkpoints/LATEST") and not storage.exists("checkpoints/NOPE")

    storage.delete("checkpoints/LATEST")
    assert not storage.exists("checkpoints/LATEST")
    storage.delete("checkpoints/step-000000001")  # a prefix goes with everything under it
    assert storage.list("checkpoints") == ["checkpoints/step-000000002/model.safetensors"]
    storage.delete("checkpoints/never-written")  # deleting what is not there is not an error
    assert storage.list() == ["checkpoints/step-000000002/model.safetensors", "config.json"]


def test_reading_a_missing_file_is_a_storage_error(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path / "run"))
    with pytest.raises(StorageError, match=r"run/config\.json: no such file"):
        storage.read("config.json")


def test_a_failed_write_is_a_storage_error_and_leaves_nothing_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where a directory should be")
    storage = open_storage(str(run))
    with pytest.raises(StorageError, match="checkpoints/LATEST: write failed"):
        storage.write("checkpoints/LATEST", b"step-000000001")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]
    assert (run / "checkpoints").read_text() == "a file where a directory should be"


def test_open_storage_takes_plain_paths_and_file_uris(tmp_path: Path) -> None:
    plain = open_storage(str(tmp_path / "run"))
    uri = open_storage(f"file://{tmp_path / 'run'}")
    assert isinstance(plain, LocalStorage) and isinstance(uri, LocalStorage)
    assert uri.uri == str(tmp_path / "run")

    uri.write("a/b.txt", b"written through file://")
    assert plain.read("a/b.txt") == b"written through file://"
    assert (tmp_path / "run" / "a" / "b.txt").is_file()


def test_open_storage_refuses_an_unknown_scheme() -> None:
    with pytest.raises(StorageError, match=r"gs://bucket/run: unsupported scheme 'gs://'"):
        open_storage("gs://bucket/run")


def test_listing_a_run_while_its_old_checkpoints_are_deleted(tmp_path: Path) -> None:
    """One thread keeps writing and deleting checkpoints, as a training run's retention does; another lists."""
    storage = open_storage(str(tmp_path / "run"))
    stop = threading.Event()

    def save_and_retire() -> None:
        step = 0
        while not stop.is_set():
            step += 1
            for name in ("model.safetensors", "state.json", "MANIFEST.json"):
                storage.write(f"checkpoints/step-{step:09d}/{name}", b"x")
            storage.delete(f"checkpoints/step-{step:09d}")

    writer = threading.Thread(target=save_and_retire)
    writer.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for key in storage.list("checkpoints"):  # never an error: a vanished checkpoint is just not listed
                assert key.startswith("checkpoints/step-")
    finally:
        stop.set()
        writer.join()
