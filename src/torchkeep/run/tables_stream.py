"""Table runs on parquet datasets larger than memory: start one streamed, or reopen one to resume.

A folder, glob or `s3://` prefix of parquet files whose size in memory (from the footers) is over
`data.in_memory_bytes` (or any parquet data with `data.stream`) is never read whole: its row groups are
split into training and validation fragments (or `--valid PATH` is another dataset), the TableSchema is
fitted in one streamed pass (data/table_stream_fit.py), and StreamLoaders (data/stream.py) read them
during training. The run records its fragments and their rows in `stream.json`, and `stream = true` in its
config, so that a resume streams the same fragments whatever memory the machine has, and refuses data
that changed. Everything else (budget, model, checkpoints, bundle) is a table run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from typing import Any

from torchkeep.config import RunConfig
from torchkeep.data.parquet import Fragment, ParquetDataset, UnreadableFile, dataset_name, memory_limit_bytes
from torchkeep.data.parquet import is_parquet_dataset, open_dataset
from torchkeep.data.stream import StreamLoader, row_bytes
from torchkeep.data.table import TableSchema
from torchkeep.data.table_stream_fit import StreamFit, fit_streamed, progress_lines
from torchkeep.errors import ConfigError, DataError
from torchkeep.models.build import build_model, tabular_model_args
from torchkeep.predict.predictor import EVAL_BATCH_ROWS
from torchkeep.run.rundir import RunDir, fingerprint, split_index
from torchkeep.run.session import Setup
from torchkeep.run.settings import override, read_init_from, with_monitor
from torchkeep.run.tables import ARCHITECTURE, apply_budget
from torchkeep.run.tables_transfer import level_aligner
from torchkeep.training.evaluate import check_device
from torchkeep.training.progress import Progress
from torchkeep.training.transfer import check_transfer

log = logging.getLogger("torchkeep")

GiB = 1 << 30


def dataset_at(config: RunConfig, data: Any) -> ParquetDataset | None:
    """The parquet dataset a table run's data names (opened: footers read and checked), or None for a
    single CSV / Parquet file, a frame or the built-in example (a single parquet file with `stream` too)."""
    path = data if isinstance(data, str) else config.data.path if data is None else None
    if config.data.stream and (path is None or path.lower().endswith(".csv")):
        raise ConfigError(f"--stream reads parquet files; {path or 'the data'} is not (convert it, or leave --stream out)")
    if path is None or not (is_parquet_dataset(path) or (config.data.stream and path.lower().endswith((".parquet", ".pq")))):
        return None
    if "://" not in path:
        path = os.path.abspath(path)
    return open_dataset(path, skip_bad_files=config.data.skip_bad_files)


def run_bytes(config: RunConfig, dataset: ParquetDataset) -> int:
    """A run's memory for `dataset` read whole: the table and its tensors (ParquetDataset.run_bytes)."""
    return dataset.run_bytes(config.data.numeric_bins if config.data.numeric_encoding.startswith("ple") else 0)


def streams(config: RunConfig, dataset: ParquetDataset) -> bool:
    """Whether to stream `dataset`: asked to, or too large for `data.in_memory_bytes` (default: a quarter
    of this machine's memory) once read whole with its tensors."""
    return config.data.stream or run_bytes(config, dataset) > (config.data.in_memory_bytes or memory_limit_bytes())


def start(dataset: ParquetDataset, config: RunConfig, overrides: dict[str, Any], progress: Progress,
          steps: int | None = None) -> Setup:
    """A new streamed table run: split the fragments, fit the schema in one pass, check, then write the
    run's files (stream.json, then run.json last)."""
    config = override(config, overrides)
    asked = config.data.stream
    data = dataclasses.replace(config.data, path=dataset.uri, stream=True)
    if data.valid_path and "://" not in data.valid_path:
        data = dataclasses.replace(data, valid_path=os.path.abspath(data.valid_path))
    config = dataclasses.replace(config, data=data)
    if data.text_columns:
        raise ConfigError(f"{dataset.uri}: text columns cannot be streamed yet; train them on a table that fits in"
                          " memory (raise --in-memory-gib) or leave --text-column out")
    if data.target is None:
        raise ConfigError("no target column: pass --target COLUMN (or target= in Python, [data] target in TOML)")
    limit = data.in_memory_bytes or memory_limit_bytes()
    why = "--stream" if asked else f"over --in-memory-gib {limit / GiB:.2f}"
    progress.message(f"streaming {dataset.uri}: {len(dataset.files):,} file(s), {dataset.rows:,} rows in"
                     f" {len(dataset.fragments):,} row groups, ~{run_bytes(config, dataset) / GiB:.2f} GiB read whole"
                     f" with its tensors ({why})")
    run = RunDir.new(config.run_dir, dataset_name(dataset.uri))
    config = dataclasses.replace(config, run_dir=run.path)
    valid_dataset, fit, train, valid = _fit(dataset, config, progress)
    schema = TableSchema(fit.categorical, fit.continuous, fit.target, [], fit.notes)
    if fit.null_targets:
        schema.notes.insert(0, {"column": data.target, "action": "rows dropped",
                                "reason": f"{fit.null_targets:,} row(s) with a null target"})
    for line in schema.note_lines():
        log.warning("%s: %s", dataset.uri, line)
    for skipped in (dataset, valid_dataset):
        if skipped.skipped:
            log.warning("%s: left out %d file(s) that cannot be read: %s", skipped.uri, len(skipped.skipped),
                        ", ".join(skipped.skipped[:5]) + (", ..." if len(skipped.skipped) > 5 else ""))
    config, budget_line = apply_budget(config, set(overrides) | config.explicit, sum(fit.train_rows), steps)
    assert schema.target is not None
    config = with_monitor(config, schema.target.task)
    pretrained, config = read_init_from(config, schema)
    model_args = tabular_model_args(config.model, schema, config.data.numeric_encoding)
    transfer_report = check_transfer(config.train.transfer, lambda: build_model(ARCHITECTURE, model_args),
                                     pretrained, level_aligner(schema))
    check_device(config.train.device)
    if budget_line:
        progress.message(budget_line)
    record = {"train": _entries(train, fit.train_rows), "valid": _entries(valid, fit.other_rows),
              "skipped": dataset.skipped, "valid_skipped": valid_dataset.skipped if valid_dataset is not dataset else []}
    run.write("stream.json", record)
    run.write_setup(config=config.to_dict(), schema=schema.to_dict(), transfer=transfer_report,
                    model={"architecture": ARCHITECTURE, "args": model_args}, data=_fingerprint(dataset, record))
    loaders = _loaders(config, run, schema, dataset, train, fit.train_rows, valid_dataset, valid, fit.other_rows)
    return Setup(run, config, schema, ARCHITECTURE, model_args, None, None, pretrained=pretrained, stream_loaders=loaders)


def _fit(dataset: ParquetDataset, config: RunConfig, progress: Progress
         ) -> tuple[ParquetDataset, StreamFit, list[Fragment], list[Fragment]]:
    """(validation dataset, the one-pass fit, training fragments, validation fragments). A file that turns out
    unreadable in the pass is left out with `skip_bad_files` (and the pass runs again without it)."""
    data = config.data
    valid_dataset = open_dataset(data.valid_path, skip_bad_files=data.skip_bad_files) if data.valid_path else dataset
    while True:
        if data.valid_path:
            train, valid = list(dataset.fragments), list(valid_dataset.fragments)
        else:
            train_index, valid_index = split_index(len(dataset.fragments), seed=config.train.seed,
                                                   valid_fraction=data.valid_fraction, what=dataset.uri, unit="row group")
            train = [dataset.fragments[i] for i in sorted(train_index)]
            valid = [dataset.fragments[i] for i in sorted(valid_index)]
        try:
            fit = fit_streamed(
                dataset, train, valid, others_dataset=valid_dataset, target=data.target or "", task=data.task,
                categorical=data.categorical, continuous=data.continuous, drop=data.drop,
                max_integer_levels=data.max_integer_levels, standardize_target=data.standardize_target,
                scaling=data.scaling, numeric_encoding=data.numeric_encoding, numeric_bins=data.numeric_bins,
                min_level_count=data.min_level_count, integer_levels_as_numbers=data.integer_levels_as_numbers,
                source=f"{dataset.uri} (training fragments)",
                on_progress=progress_lines(progress.message))
        except UnreadableFile as error:
            if not data.skip_bad_files:
                raise DataError(f"{error}; fix or remove the file, or pass --skip-bad-files to leave it out") from None
            bad = valid_dataset if error.key in valid_dataset.files and error.key not in dataset.files else dataset
            bad.leave_out(error.key)
            progress.message(f"left out {bad.where(error.key)} (cannot be read); fitting again without it")
            continue
        return valid_dataset, fit, train, valid


def _entries(fragments: list[Fragment], rows: list[int]) -> list[dict[str, Any]]:
    return [{"file": f.file, "row_group": f.row_group, "rows": f.rows, "target_rows": n} for f, n in zip(fragments, rows)]


def _fingerprint(dataset: ParquetDataset, record: dict[str, Any]) -> dict[str, Any]:
    content = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).digest()
    rows = sum(entry["target_rows"] for entry in record["train"] + record["valid"])
    return fingerprint(rows, list(dataset.columns), content, streamed=True)


def _loaders(config: RunConfig, run: RunDir, schema: TableSchema, dataset: ParquetDataset, train: list[Fragment],
             train_rows: list[int], valid_dataset: ParquetDataset, valid: list[Fragment],
             valid_rows: list[int]) -> tuple[StreamLoader, StreamLoader]:
    """The training and validation loaders; their decoded row groups cached in RUN_DIR/stream-cache/ (a folder
    in the temp dir for a run on s3://), `stream_cache_bytes` in all: validation's share is its size, at most half."""
    settings, limit = config.train, config.data.stream_cache_bytes
    if run.path.startswith("s3://"):
        folder = os.path.join(tempfile.gettempdir(), "torchkeep-stream-cache",
                              hashlib.sha256(run.path.encode()).hexdigest()[:16])
    else:
        folder = os.path.join(run.path, "stream-cache")
    valid_limit = min(limit // 2, sum(valid_rows) * row_bytes(schema) + 256 * len(valid))
    return (
        StreamLoader(dataset, train, train_rows, schema, settings.batch_size, shuffle=True, seed=settings.seed,
                     buffer_bytes=config.data.shuffle_buffer_bytes, cache_dir=os.path.join(folder, "train"),
                     cache_bytes=limit - valid_limit),
        StreamLoader(valid_dataset, valid, valid_rows, schema, EVAL_BATCH_ROWS, shuffle=False,
                     buffer_bytes=config.data.shuffle_buffer_bytes, cache_dir=os.path.join(folder, "valid"),
                     cache_bytes=valid_limit),
    )


def is_stream_run(run: RunDir) -> bool:
    return run.exists("stream.json")


def reopen(run: RunDir, data: Any) -> Setup:
    """A streamed run to resume: its saved config, schema and model, and the same fragments (checked)."""
    config = RunConfig.from_dict(run.read("config.json"), source=f"{run.path}/config.json")
    if isinstance(data, str):
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=data))
    assert config.data.path is not None
    record = run.read("stream.json")
    dataset = open_dataset(config.data.path, skip_bad_files=config.data.skip_bad_files)
    valid_dataset = (open_dataset(config.data.valid_path, skip_bad_files=config.data.skip_bad_files)
                     if config.data.valid_path else dataset)
    train = _same_fragments(dataset, record["train"])
    valid = _same_fragments(valid_dataset, record["valid"])
    known = {e["file"] for e in record["train"] + (record["valid"] if valid_dataset is dataset else [])}
    new = sorted({f.file for f in dataset.fragments} - known - set(record["skipped"]))
    if new:
        log.warning("%s: %d file(s) added since the run started are not trained on (%s)", dataset.uri, len(new),
                    ", ".join(new[:3]) + (", ..." if len(new) > 3 else ""))
    schema = TableSchema.from_dict(run.read("schema.json"))
    spec = run.read("model.json")
    loaders = _loaders(config, run, schema, dataset, train, [e["target_rows"] for e in record["train"]],
                       valid_dataset, valid, [e["target_rows"] for e in record["valid"]])
    return Setup(run, config, schema, spec["architecture"], spec["args"], None, None, stream_loaders=loaders)


def _same_fragments(dataset: ParquetDataset, entries: list[dict[str, Any]]) -> list[Fragment]:
    """The recorded fragments in `dataset`, which must still hold each of them with the same rows."""
    found = {(f.file, f.row_group): f for f in dataset.fragments}
    fragments = []
    for entry in entries:
        fragment = found.get((entry["file"], entry["row_group"]))
        if fragment is None or fragment.rows != entry["rows"]:
            now = "is gone" if fragment is None else f"has {fragment.rows:,} rows, {entry['rows']:,} when the run started"
            raise DataError(f"{dataset.where(entry['file'])} (row group {entry['row_group']}) {now}; a streamed run"
                            " resumes only on the data it started with")
        fragments.append(fragment)
    return fragments
