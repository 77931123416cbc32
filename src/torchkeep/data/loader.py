"""Loaders that `fit()` iterates: whole-batch gathering from memory, or a user's Dataset (slow path).

Both yield batches, know their epoch and position, and save/restore them with
`state_dict()` / `load_state_dict()`, so a run resumes mid-epoch on exactly the next batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from torchkeep.errors import ConfigError, DataError

# Bytes gathered per index_select call: one big gather per chunk, then cheap slices per batch.
# On flights (80 bytes a row) this is the whole epoch at once, which ran ~1.5x faster than one
# gather per batch; the budget bounds the extra copy for wide tables.
CHUNK_BYTES = 64 << 20


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed seed per (seed, epoch): every epoch's order is fixed by the run seed alone."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchLoader:
    """Batches of in-memory tensors (dict of [N, ...] tensors sharing N), gathered whole.

    Per epoch, rows are shuffled with a generator seeded by (seed, epoch), gathered with one
    `index_select` per chunk of rows and handed out as slices: no per-row Python anywhere.
    A value may also be ragged rows that gather themselves (`len`, `row_bytes`, `take(rows)`, and
    slicing; data/text.py's PackedText): it is gathered once per batch, so each batch is padded
    only to its own longest row.
    """

    def __init__(
        self,
        tensors: dict[str, torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be > 0 (got {batch_size})")
        if not tensors:
            raise DataError("BatchLoader needs at least one tensor")
        sizes = {name: len(t) for name, t in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise DataError(f"BatchLoader tensors differ in their number of rows: {sizes}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, world_size) (got rank {rank}, world_size {world_size})")
        self.tensors = {name: t.contiguous() if isinstance(t, torch.Tensor) else t for name, t in tensors.items()}
        self.num_rows = next(iter(sizes.values()))
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # batches already handed out in this epoch
        self.samples = 0  # samples of this epoch's order handed out, all ranks together

    @property
    def epoch_rows(self) -> int:
        """Samples of an epoch's order handed out, all ranks together: a multiple of the world size (at most
        world - 1 rows, different ones every epoch, wait for the next), and of the global batch with drop_last."""
        rows = self.num_rows - self.num_rows % self.world_size
        return rows - rows % (self.batch_size * self.world_size) if self.drop_last else rows

    @property
    def rows_per_epoch(self) -> int:
        """This rank's rows of an epoch."""
        return self.epoch_rows // self.world_size

    def __len__(self) -> int:
        return -(-self.epoch_rows // (self.batch_size * self.world_size))

    def _order(self) -> torch.Tensor | None:
        """Sample order of this epoch, or None when one process reads rows in place."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            return torch.randperm(self.num_rows, generator=generator)
        return None if self.world_size == 1 else torch.arange(self.num_rows)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Global batch k is samples [k x world x batch_size, (k + 1) x world x batch_size) of the epoch's order;
        rank r takes the r-th of its `world` equal slices (the last global batch may be shorter: slices differ by
        at most one row). One process: consecutive batches, gathered a chunk at a time."""
        order = self._order()
        rows, world = self.epoch_rows, self.world_size
        dense = {name: t for name, t in self.tensors.items() if isinstance(t, torch.Tensor)}
        ragged = {name: t for name, t in self.tensors.items() if not isinstance(t, torch.Tensor)}
        if world > 1:
            assert order is not None
            while rows - self.samples >= world:
                count = min(self.batch_size * world, rows - self.samples)
                index = order[self.samples + self.rank * count // world : self.samples + (self.rank + 1) * count // world]
                self.position += 1
                self.samples += count
                batch = {name: torch.index_select(t, 0, index) for name, t in dense.items()}
                yield {name: batch[name] if name in batch else t.take(index) for name, t in self.tensors.items()}
        size = self.batch_size
        row_bytes = sum(t[:1].nbytes for t in dense.values()) + sum(t.row_bytes for t in ragged.values()) or 1
        chunk_batches = max(1, CHUNK_BYTES // row_bytes // size)
        while self.samples < rows and world == 1:
            first = self.samples
            last = min(rows, first + chunk_batches * size)
            if order is None:
                index = None
                chunk = {name: t[first:last] for name, t in dense.items()}
            else:
                index = order[first:last]
                chunk = {name: torch.index_select(t, 0, index) for name, t in dense.items()}
            for start in range(0, last - first, size):
                self.position += 1
                self.samples = min(last, first + start + size)
                batch = {name: t[start : start + size] for name, t in chunk.items()}
                for name, t in ragged.items():
                    batch[name] = (t[first + start : min(last, first + start + size)] if index is None
                                   else t.take(index[start : start + size]))
                yield {name: batch[name] for name in self.tensors}
        self.epoch += 1
        self.position = 0
        self.samples = 0

    def state_dict(self) -> dict[str, Any]:
        """The GLOBAL position (samples of this epoch handed out, every rank's together), the same on every
        rank, so a resume at another world size continues at exactly the next unseen sample."""
        return {"epoch": self.epoch, "position": self.position, "samples": self.samples, "seed": self.seed,
                "num_rows": self.num_rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_rows", self.num_rows) != self.num_rows:
            raise DataError(
                f"loader state is for {state['num_rows']} rows but the data has {self.num_rows}:"
                " the data changed since the checkpoint was written"
            )
        self.epoch, self.seed = int(state["epoch"]), int(state["seed"])
        # Checkpoints from before sharding hold the position only (one process, whole batches).
        self.samples = int(state.get("samples", int(state["position"]) * self.batch_size))
        self.position = -(-self.samples // (self.batch_size * self.world_size))


def _unwrapped(error: DataError) -> DataError:
    """A DataError raised in a worker process comes back with the worker's traceback in its message
    ("Caught DataError in DataLoader worker process 0. Original Traceback ..."): the user's one line
    (which file, what was expected) is what follows the error's name on the last entry."""
    text = str(error)
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    if "DataLoader worker process" not in text or marker not in text:
        return error
    return type(error)(text[text.rindex(marker) + len(marker) :].strip())


def default_num_workers() -> int:
    # Workers compete with the training threads for cores; on 2 cores they made epochs slower.
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores // 2)


class DatasetLoader:
    """The slow path: any map-style `torch.utils.data.Dataset`, one `__getitem__` per row.

    Backed by torchdata's `StatefulDataLoader`, which keeps sampler and worker state so that
    mid-epoch resume is exact here too. Prefer tensors + BatchLoader when the data fits in memory.
    """

    def __init__(
        self,
        dataset: torch.utils.data.Dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        collate_fn: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be > 0 (got {batch_size})")
        from torchdata.stateful_dataloader import StatefulDataLoader

        workers = default_num_workers() if num_workers is None else num_workers
        self.batch_size = batch_size
        self.seed = seed
        self.num_rows = len(dataset)  # type: ignore[arg-type]
        self.epoch = 0
        self.position = 0
        self._loader = StatefulDataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=drop_last,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            persistent_workers=(workers > 0) if persistent_workers is None else persistent_workers,
            prefetch_factor=(prefetch_factor or 2) if workers > 0 else None,
            generator=torch.Generator().manual_seed(seed),
            collate_fn=collate_fn,
        )

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[Any]:
        if self.position == 0:
            # Each epoch's order from (seed, epoch) alone, as in BatchLoader: a run resumed at an
            # epoch boundary then sees the same later epochs as an uninterrupted one.
            self._loader.generator.manual_seed(epoch_seed(self.seed, self.epoch))
        batches = iter(self._loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except DataError as error:
                raise _unwrapped(error) from None
            self.position += 1
            yield batch
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "loader": self._loader.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        if self.position > 0:  # mid-epoch: the sampler and workers pick up where they were
            self._loader.load_state_dict(state["loader"])
