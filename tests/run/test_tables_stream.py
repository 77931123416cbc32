"""Table runs on parquet datasets: read whole under the memory limit (nothing changes), streamed above it
or with --stream, from a folder or an s3:// prefix; bad datasets get one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

import torchkeep
from torchkeep.data.io import read_table
from torchkeep.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread_and_restored_determinism")

FAST = {"target": "late", "epochs": 1, "batch_size": 256, "ensemble_size": 1, "quiet": True}


def write_parts(frame: pl.DataFrame, root: Path, files: int = 4, row_group_rows: int = 200) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(frame.height), files)):
        frame[part].write_parquet(root / f"part-{i:03d}.parquet", row_group_size=row_group_rows)


def weights(run: str) -> dict[str, torch.Tensor]:
    return load_file(Path(run) / "bundle" / "model.safetensors")


def test_a_folder_under_the_memory_limit_trains_as_the_same_rows_in_one_file(tmp_path: Path, make_table) -> None:
    frame = make_table(2_000)
    write_parts(frame, tmp_path / "flights")
    frame.write_parquet(tmp_path / "flights.parquet")
    folder = torchkeep.train(str(tmp_path / "flights"), run_dir=str(tmp_path / "a"), **FAST)
    single = torchkeep.train(str(tmp_path / "flights.parquet"), run_dir=str(tmp_path / "b"), **FAST)
    assert not (tmp_path / "a" / "stream.json").exists()
    expected, got = weights(single.run_dir), weights(folder.run_dir)
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_over_the_memory_limit_the_run_streams_and_records_its_fragments(tmp_path: Path, make_table) -> None:
    write_parts(make_table(2_000), tmp_path / "flights")
    result = torchkeep.train(str(tmp_path / "flights"), run_dir=str(tmp_path / "run"), in_memory_bytes=1, **FAST)
    record = json.loads((tmp_path / "run" / "stream.json").read_text())
    assert len(record["train"]) + len(record["valid"]) == 12 and len(record["valid"]) == 1  # 10% of the row groups
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["stream"] is True
    assert result.valid["roc_auc"] > 0.7
    assert not (tmp_path / "run" / "stream-cache").exists()  # a run that completes deletes its decoded copy


def test_a_streamed_run_resumes_only_on_the_same_fragments(tmp_path: Path, make_table) -> None:
    frame = make_table(2_000)
    write_parts(frame, tmp_path / "flights")
    torchkeep.train(str(tmp_path / "flights"), run_dir=str(tmp_path / "run"), stream=True, stop_at_step=2, **FAST)
    assert any((tmp_path / "run" / "stream-cache" / "train").iterdir())  # a stopped run keeps it for --resume
    frame[:300].write_parquet(tmp_path / "flights" / "part-001.parquet", row_group_size=200)
    with pytest.raises(DataError, match=r"part-001\.parquet \(row group 1\) has 100 rows, 200 when the run started"):
        torchkeep.train(resume=str(tmp_path / "run"), quiet=True)


def test_an_s3_prefix_of_parquet_files_trains_streamed_and_reads_whole(tmp_path: Path, make_table, s3) -> None:
    frame = make_table(1_500)
    write_parts(frame, tmp_path / "local" / "month=1", files=2)
    write_parts(frame[:500], tmp_path / "local" / "month=2", files=1)
    bucket = s3.new_bucket()
    client = s3.client()
    for path in sorted((tmp_path / "local").rglob("*.parquet")):
        client.upload_file(str(path), bucket, f"flights/{path.relative_to(tmp_path / 'local').as_posix()}")
    client.put_object(Bucket=bucket, Key="flights/_SUCCESS", Body=b"")
    uri = f"s3://{bucket}/flights/"
    whole = read_table(uri)
    assert whole.height == 2_000 and whole.get_column("month").to_list() == [1] * 1_500 + [2] * 500
    result = torchkeep.train(uri, run_dir=str(tmp_path / "run"), stream=True, **FAST)
    assert (tmp_path / "run" / "stream.json").exists() and result.bundle


def test_bad_datasets_get_one_line_naming_the_file(tmp_path: Path, make_table, torchkeep) -> None:
    frame = make_table(600)
    write_parts(frame, tmp_path / "mixed", files=2)
    frame.with_columns(pl.col("hour").cast(pl.String))[:100].write_parquet(tmp_path / "mixed" / "part-002.parquet")
    done = torchkeep("train", "--data", "mixed", "--target", "late", "--stream", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path}/mixed/part-002.parquet: column 'hour' is String here but Int64 in"
        f" {tmp_path}/mixed/part-000.parquet; every file of a dataset needs the same column types"]

    write_parts(frame, tmp_path / "broken", files=3)
    (tmp_path / "broken" / "part-001.parquet").write_bytes(b"PAR1 not really")
    done = torchkeep("train", "--data", "broken", "--target", "late", "--stream", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"{tmp_path}/broken/part-001.parquet: not a readable parquet file" in done.stderr
    assert "--skip-bad-files" in done.stderr
    done = torchkeep("train", "--data", "broken", "--target", "late", "--stream", "--skip-bad-files", "--epochs", 1,
                     "--run-dir", "skipped", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "left out 1 file(s) that cannot be read: part-001.parquet" in done.stderr

    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("no tables here")
    for data in ("nothing/*.parquet", "nothing"):
        done = torchkeep("train", "--data", data, "--target", "late", cwd=tmp_path)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
        assert "no parquet files (*.parquet)" in done.stderr

    frame.write_csv(tmp_path / "flights.csv")
    done = torchkeep("train", "--data", "flights.csv", "--target", "late", "--stream", cwd=tmp_path)
    assert done.returncode == 2 and "--stream reads parquet files; flights.csv is not" in done.stderr


def test_a_row_group_that_cannot_be_decoded_is_named_or_its_file_left_out(tmp_path: Path, make_table, torchkeep) -> None:
    frame = make_table(900)
    (tmp_path / "d").mkdir()
    frame[:300].write_parquet(tmp_path / "d" / "a.parquet", row_group_size=100)
    frame[300:].write_parquet(tmp_path / "d" / "b.parquet", row_group_size=200)
    offset = pq.ParquetFile(tmp_path / "d" / "b.parquet").metadata.row_group(1).column(5).data_page_offset
    data = bytearray((tmp_path / "d" / "b.parquet").read_bytes())
    data[offset + 10 : offset + 60] = b"\xff" * 50  # the footer still reads; row group 1's pages do not
    (tmp_path / "d" / "b.parquet").write_bytes(data)
    done = torchkeep("train", "--data", "d", "--target", "late", "--stream", cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]  # after the progress lines, one error line
    assert done.returncode == 2 and done.stderr.count("error") == 1
    assert last.startswith(f"error: {tmp_path}/d/b.parquet: cannot read row group 1 as parquet:")
    assert last.endswith("; fix or remove the file, or pass --skip-bad-files to leave it out")
    done = torchkeep("train", "--data", "d", "--target", "late", "--stream", "--skip-bad-files", "--epochs", 1,
                     "--run-dir", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(cannot be read); fitting again without it" in done.stderr
    record = json.loads((tmp_path / "run" / "stream.json").read_text())
    assert record["skipped"] == ["b.parquet"] and {e["file"] for e in record["train"] + record["valid"]} == {"a.parquet"}
