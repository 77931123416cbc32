"""StreamLoader: whole batches from a parquet dataset larger than memory, resumable at any batch.

Per epoch, the fragments (row groups) are put in an order seeded by (seed, epoch) and grouped, in that
order, into windows of at most `buffer_bytes` of decoded tensors (at least one fragment each). Background
threads read and decode the fragments ahead of use (parquet -> polars -> the run's TableSchema.transform:
column tensors, never rows), at most `read_ahead_bytes` of them at a time. Each window's rows are
shuffled with a generator seeded by (seed, epoch, window) and gathered whole (one index_select per chunk,
as in BatchLoader); the epoch's rows, window after window, are cut into batches of `batch_size` (a batch
may span two windows).

Everything that decides a batch is a function of (seed, epoch) and the fragments' row counts, so the
state is just the epoch and the batches handed out: `load_state_dict` finds the window and the offset in
it where the next batch starts, reads that window again, and continues with exactly that batch
(tests/data/test_stream.py; tests/checkpoint/test_kill_stream.py after SIGKILL). Memory: one window, the
read-ahead, one gathered chunk, and the decode in flight (bench/README.md measures it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.data.loader import CHUNK_BYTES, epoch_seed
from torchkeep.data.parquet import Fragment, ParquetDataset
from torchkeep.data.stream_cache import FragmentCache, fragment_identity
from torchkeep.data.table import TableSchema
from torchkeep.errors import ConfigError, DataError

log = logging.getLogger("torchkeep")

BUFFER_BYTES = 256 << 20  # decoded rows shuffled together
# Small row groups of a window are decoded together, up to this many rows: each polars operation of
# `transform` costs ~0.1 ms whatever its size, which was most of the time on row groups of 5,000 rows.
DECODE_ROWS = 65_536
# Reader threads: parquet decoding and transform release the GIL for most of their time; half the cores
# (at least 2), the other half trains.
THREADS = max(2, min(8, (os.cpu_count() or 2) // 2))
CACHE_BYTES = 16 << 30  # decoded fragments kept on local disk (with a cache folder)


def window_seed(seed: int, epoch: int, window: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, window]).generate_state(1, dtype=np.uint64)[0] >> 1)


def row_bytes(schema: TableSchema) -> int:
    """Bytes of one row's tensors after `transform`: int64 codes, float32 inputs, the target."""
    target = 8 if schema.target is not None and schema.target.task == "multiclass" else 4
    return 8 * len(schema.categorical) + 4 * schema.n_continuous_inputs + target


class StreamLoader:
    """The BatchLoader interface (len, iteration, epoch, position, state_dict) over parquet fragments.

    `fragments` with `rows` (each fragment's rows that have a target, from the schema's fitting pass).
    Without `shuffle`, fragments and rows keep their order (validation).
    """

    def __init__(self, dataset: ParquetDataset, fragments: list[Fragment], rows: list[int], schema: TableSchema,
                 batch_size: int, *, shuffle: bool = True, seed: int = 0, buffer_bytes: int = BUFFER_BYTES,
                 read_ahead_bytes: int | None = None, threads: int = THREADS, cache_dir: str | None = None,
                 cache_bytes: int = CACHE_BYTES) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be > 0 (got {batch_size})")
        if buffer_bytes < 1:
            raise ConfigError(f"the shuffle buffer must be > 0 bytes (got {buffer_bytes})")
        if schema.text:
            raise DataError("text columns cannot be streamed yet; train them in memory (a table under --in-memory-gib)")
        kept = [(f, n) for f, n in zip(fragments, rows, strict=True) if n > 0]
        if not kept:
            raise DataError(f"{dataset.uri}: no rows to stream")
        self.dataset, self.schema = dataset, schema
        self.fragments = [f for f, _ in kept]
        self.rows = [n for _, n in kept]
        self.num_rows = sum(self.rows)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.row_bytes = row_bytes(schema)
        self.window_rows = max(batch_size, buffer_bytes // self.row_bytes)
        self.read_ahead_bytes = read_ahead_bytes if read_ahead_bytes is not None else buffer_bytes // 2
        self.threads = threads
        self.columns = [*schema.feature_names, *([schema.target.name] if schema.target else [])]
        self.epoch = 0
        self.position = 0  # batches already handed out in this epoch
        self.cache = self._open_cache(cache_dir, cache_bytes) if cache_dir is not None and cache_bytes > 0 else None
        self._warned = False
        self._buffer: dict[str, torch.Tensor] | None = None  # the shuffled windows' buffer, while iterating

    def _open_cache(self, folder: str, limit: int) -> FragmentCache:
        """The folder of this loader's decoded fragments (data/stream_cache.py), keyed by schema and fragment."""
        schema_json = self.schema.to_json()
        keys = [FragmentCache.key(schema_json, self.columns, fragment_identity(self.dataset, f)) for f in self.fragments]
        target = self.schema.target
        layout = [("categorical", torch.int64, (len(self.schema.categorical),)),
                  ("continuous", torch.float32, (self.schema.n_continuous_inputs,))]
        if target is not None:
            layout.append(("target", torch.int64 if target.task == "multiclass" else torch.float32, ()))
        return FragmentCache(folder, keys, limit, layout)

    def drop_cache(self) -> None:
        """Delete the decoded fragments on disk; later epochs (if any) read parquet again."""
        if self.cache is not None:
            self.cache.remove()
            self.cache = None

    @property
    def rows_per_epoch(self) -> int:
        return self.num_rows

    def __len__(self) -> int:
        return -(-self.num_rows // self.batch_size)

    def order(self, epoch: int) -> list[int]:
        """The fragments' order in `epoch`."""
        if not self.shuffle:
            return list(range(len(self.fragments)))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.fragments), generator=generator).tolist()

    def windows(self, epoch: int) -> list[list[int]]:
        """The epoch's fragments grouped, in order, into windows of at most `window_rows` rows (at least one
        fragment each); without shuffle every fragment is its own window."""
        windows: list[list[int]] = []
        size = 0
        for index in self.order(epoch):
            if not windows or not self.shuffle or size + self.rows[index] > self.window_rows:
                windows.append([])
                size = 0
            windows[-1].append(index)
            size += self.rows[index]
        return windows

    def locate(self, epoch: int, row: int) -> tuple[int, int]:
        """(window, offset in it) of the epoch's `row`-th row."""
        start = 0
        for number, window in enumerate(self.windows(epoch)):
            size = sum(self.rows[i] for i in window)
            if row < start + size:
                return number, row - start
            start += size
        raise AssertionError(f"row {row} is past the epoch's {self.num_rows} rows")

    def groups(self, window: list[int]) -> list[list[int]]:
        """A window's fragments in runs of at most DECODE_ROWS rows (at least one fragment each), decoded together."""
        groups: list[list[int]] = []
        size = 0
        for index in window:
            if not groups or size + self.rows[index] > DECODE_ROWS:
                groups.append([])
                size = 0
            groups[-1].append(index)
            size += self.rows[index]
        return groups

    def decode(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Fragments' rows that have a target, in order, as the run's tensors, one dict per fragment: from the
        cache where it has them, the others read and transformed together (and written to the cache)."""
        cache = self.cache
        parts = [cache.get(i, self.rows[i]) if cache is not None else None for i in indices]
        missing = [i for i, part in zip(indices, parts) if part is None]
        if missing:
            tensors = self._decode(missing)
            start = 0
            decoded = iter(missing)
            for number, part in enumerate(parts):
                if part is None:
                    index = next(decoded)
                    parts[number] = {k: v[start : start + self.rows[index]] for k, v in tensors.items()}
                    start += self.rows[index]
                    if cache is not None:
                        cache.put(index, parts[number])  # type: ignore[arg-type]
            if cache is not None and cache.full is not None and not self._warned:
                self._warned = True
                log.warning("%s: some row groups are not cached on disk (%s); they are read from parquet every"
                            " epoch", self.dataset.uri, cache.full)
        return parts  # type: ignore[return-value]

    def _decode(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """Fragments' rows that have a target, in order, from parquet (one `transform` for them all)."""
        frames = []
        for index in indices:
            fragment = self.fragments[index]
            frame = self.dataset.read_fragment(fragment, self.columns)
            if self.schema.target is not None and frame.get_column(self.schema.target.name).null_count():
                frame = frame.filter(pl.col(self.schema.target.name).is_not_null())
            if frame.height != self.rows[index]:
                raise DataError(f"{self.dataset.where(fragment.file)} (row group {fragment.row_group}): {frame.height:,}"
                                f" rows with a target, {self.rows[index]:,} when the run started; the data changed, and"
                                " a streamed run needs the same data to continue")
            frames.append(frame)
        first = self.fragments[indices[0]]
        where = f"{self.dataset.where(first.file)} (row group {first.row_group}{' and others' if len(indices) > 1 else ''})"
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical", rechunk=False)
        return self.schema.transform(frame, source=where, with_target=self.schema.target is not None)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        size = self.batch_size
        if self.position >= len(self):  # as BatchLoader: an epoch already handed out ends here
            self.epoch, self.position = self.epoch + 1, 0
            return
        windows = self.windows(self.epoch)
        first, offset = self.locate(self.epoch, self.position * size)
        pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="torchkeep-stream")
        groups = [group for window in windows[first:] for group in self.groups(window)]
        reads = _ReadAhead(pool, self.decode, groups, [sum(self.rows[i] for i in g) * self.row_bytes for g in groups],
                           self.read_ahead_bytes)
        pending: list[dict[str, torch.Tensor]] = []
        pending_rows = 0
        try:
            for number in range(first, len(windows)):
                for piece in self._pieces(windows[number], number, reads, offset if number == first else 0):
                    rows = len(next(iter(piece.values())))
                    start = 0
                    if pending_rows:  # the rest of a batch that began in the previous window
                        take = min(size - pending_rows, rows)
                        pending.append({k: v[:take] for k, v in piece.items()})
                        pending_rows, start = pending_rows + take, take
                        if pending_rows < size:
                            continue
                        self.position += 1
                        yield {k: torch.cat([p[k] for p in pending]) for k in piece}
                        pending, pending_rows = [], 0
                    while rows - start >= size:
                        self.position += 1
                        yield {k: v[start : start + size] for k, v in piece.items()}
                        start += size
                    if start < rows:
                        pending, pending_rows = [{k: v[start:] for k, v in piece.items()}], rows - start
            if pending_rows:  # the epoch's last, shorter batch
                self.position += 1
                yield {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
        finally:
            self._buffer = None
            reads.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        self.epoch += 1
        self.position = 0

    def _pieces(self, window: list[int], number: int, reads: _ReadAhead, offset: int
                ) -> Iterator[dict[str, torch.Tensor]]:
        """A window's rows from `offset` in its shuffled order, in chunks gathered whole."""
        total = sum(self.rows[i] for i in window)
        parts = reads.next()
        groups = len(self.groups(window))
        if groups > 1 or len(parts) > 1:  # one buffer for the window, filled as its fragments arrive
            first = parts[0]
            tensors = self._window_buffer(first, total)
            start = 0
            for more in range(groups):
                if more:
                    parts = reads.next()
                for part in parts:
                    rows = len(next(iter(part.values())))
                    for k, v in part.items():
                        tensors[k][start : start + rows] = v
                    start += rows
            del parts, part, first
        else:
            tensors = parts[0]
        if not self.shuffle:
            yield {k: v[offset:] for k, v in tensors.items()}
            return
        order = torch.randperm(total, generator=torch.Generator().manual_seed(window_seed(self.seed, self.epoch, number)))
        chunk = max(self.batch_size, CHUNK_BYTES // self.row_bytes)
        for start in range(offset, total, chunk):
            index = order[start : start + chunk]
            yield {k: torch.index_select(v, 0, index) for k, v in tensors.items()}

    def _window_buffer(self, like: dict[str, torch.Tensor], total: int) -> dict[str, torch.Tensor]:
        """Room for a window's rows. Shuffled, one buffer serves the epoch's windows in turn (its chunks are
        gathered copies): no page faults on fresh memory per window, the cost of filling a new one."""
        if not self.shuffle:
            return {k: torch.empty((total, *v.shape[1:]), dtype=v.dtype) for k, v in like.items()}
        if self._buffer is None or len(next(iter(self._buffer.values()))) < total:
            self._buffer = None
            rows = max(total, min(self.window_rows, self.num_rows))
            self._buffer = {k: torch.empty((rows, *v.shape[1:]), dtype=v.dtype) for k, v in like.items()}
        return {k: v[:total] for k, v in self._buffer.items()}

    def state_dict(self) -> dict[str, Any]:
        state = {"epoch": self.epoch, "position": self.position, "seed": self.seed, "num_rows": self.num_rows,
                 "fragments": len(self.fragments), "window_rows": self.window_rows}
        if self.position < len(self):  # where the next batch starts: for a reader of the checkpoint
            window, offset = self.locate(self.epoch, self.position * self.batch_size)
            state.update(window=window, fragment=sum(len(w) for w in self.windows(self.epoch)[:window]), offset=offset)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state.get("num_rows", self.num_rows), state.get("fragments", len(self.fragments))) != (
                self.num_rows, len(self.fragments)):
            raise DataError(f"loader state is for {state['num_rows']:,} rows in {state['fragments']:,} fragments but the"
                            f" data has {self.num_rows:,} in {len(self.fragments):,}: the data changed since the"
                            " checkpoint was written")
        if state.get("window_rows", self.window_rows) != self.window_rows:
            raise DataError(f"loader state is for a shuffle buffer of {state['window_rows']:,} rows, this loader has"
                            f" {self.window_rows:,}: resume with the run's own settings")
        self.epoch, self.position, self.seed = int(state["epoch"]), int(state["position"]), int(state["seed"])


class _ReadAhead:
    """Groups of fragments decoded in order by a thread pool, at most `limit` bytes of them ahead of the reader."""

    def __init__(self, pool: ThreadPoolExecutor, decode: Any, indices: list[Any], sizes: list[int], limit: int) -> None:
        self.pool, self.decode, self.limit = pool, decode, limit
        self.queue = list(zip(indices, sizes))
        self.next_submit = 0
        self.inflight: list[tuple[int, Future[list[dict[str, torch.Tensor]]]]] = []
        self._top_up()

    def _top_up(self) -> None:
        while self.next_submit < len(self.queue):
            index, size = self.queue[self.next_submit]
            if self.inflight and sum(s for s, _ in self.inflight) + size > self.limit:
                return
            self.inflight.append((size, self.pool.submit(self.decode, index)))
            self.next_submit += 1

    def next(self) -> list[dict[str, torch.Tensor]]:
        _, future = self.inflight.pop(0)
        self._top_up()
        return future.result()

    def cancel(self) -> None:
        for _, future in self.inflight:
            future.cancel()
        self.inflight.clear()
