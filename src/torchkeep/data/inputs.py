"""What `torchkeep.fit` takes as data, turned into the loaders that train.loop.fit iterates.

- tensors (the fast path, BatchLoader): an `(inputs, target)` pair, `inputs` a tensor (the model is
  called `model(inputs)`) or a dict of tensors (`model(**inputs)`); or a dict of tensors with a
  `"target"` key (`model(**the others)`). numpy arrays are taken as tensors.
- a map-style `Dataset` (DatasetLoader: one `__getitem__` per row, workers, exact mid-epoch resume);
  its items are `(inputs, target)` pairs or dicts with `"target"`.
- a `DataLoader`: rebuilt as a DatasetLoader from its dataset, batch_size, shuffle (RandomSampler or
  SequentialSampler), drop_last, collate_fn, num_workers, pin_memory, persistent_workers and
  prefetch_factor, so that a resume continues on exactly the next batch. The order of its batches
  then comes from the run's seed, not from the DataLoader's generator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
)

from torchkeep import distributed
from torchkeep.data.loader import BatchLoader, DatasetLoader
from torchkeep.errors import ConfigError, DataError

log = logging.getLogger("torchkeep")

INPUT = "input"  # the name of a single positional input tensor (in the bundle and in exports)
TARGET = "target"
PEEK_ROWS = 256  # rows of a Dataset looked at before training: the input spec, and the targets a loss is inferred from
EXPECTED = ("a Dataset, a DataLoader, an (inputs, target) pair of tensors, or a dict of tensors with"
            " a 'target' key")


class PairLoader:
    """A BatchLoader of {"input", "target"} that hands out `(input, target)` pairs: `model(input)`."""

    def __init__(self, loader: BatchLoader) -> None:
        self.loader = loader

    epoch = property(lambda self: self.loader.epoch)
    position = property(lambda self: self.loader.position)
    world_size = property(lambda self: self.loader.world_size)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            yield batch[INPUT], batch[TARGET]

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


@dataclass
class Prepared:
    loader: Any  # a train.loop.Loader (BatchLoader, PairLoader, DatasetLoader) or, for validation, any iterable
    kind: str  # "tensors" | "dataset" | "dataloader"
    rows: int
    batch_size: int
    sample: Any  # a first batch: what the model is called with, and its targets
    seen: str  # which targets `sample` holds, for messages


def _tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise ConfigError(f"{what}: expected a tensor (got {type(value).__name__})")


def _tensors(data: Any, what: str) -> tuple[dict[str, torch.Tensor], bool]:
    """(tensors by name with "target", whether the model takes one positional input)."""
    if isinstance(data, dict):
        if TARGET not in data:
            raise ConfigError(f"{what}: a dict of tensors needs a '{TARGET}' key (has: {', '.join(map(str, data))})")
        return {str(k): _tensor(v, f"{what}[{k!r}]") for k, v in data.items()}, False
    if len(data) != 2:
        raise ConfigError(f"{what}: expected an (inputs, target) pair (got a {type(data).__name__} of {len(data)})")
    inputs, target = data
    if isinstance(inputs, dict):
        if TARGET in inputs:
            raise ConfigError(f"{what}: the inputs dict has a '{TARGET}' key; the target is the pair's second item")
        named = {str(k): _tensor(v, f"{what}[0][{k!r}]") for k, v in inputs.items()}
        return {**named, TARGET: _tensor(target, f"{what}[1]")}, False
    return {INPUT: _tensor(inputs, f"{what}[0]"), TARGET: _tensor(target, f"{what}[1]")}, True


def _from_dataloader(loader: DataLoader, what: str, seed: int, shuffle: bool) -> Any:
    """The DataLoader as a DatasetLoader. For validation (`shuffle=False`) in order, whatever its sampler;
    a torch DataLoader would draw its workers' base seed from the global RNG at every validation."""
    sampler = loader.sampler
    random_ok = isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None
    if loader.batch_size is None or type(loader.batch_sampler) is not BatchSampler or not (
            random_ok or isinstance(sampler, SequentialSampler)):
        if not shuffle:
            return loader  # a sampler of its own: validation just iterates it
        raise ConfigError(f"{what}: a DataLoader with its own sampler or batch_sampler cannot be rebuilt to resume"
                          " exactly; pass its Dataset (and batch_size=...) instead")
    if loader.worker_init_fn is not None:
        log.warning("%s: the DataLoader's worker_init_fn is not used (torchkeep seeds and restores the workers)", what)
    return DatasetLoader(
        loader.dataset, loader.batch_size, shuffle=shuffle and isinstance(sampler, RandomSampler), seed=seed,
        drop_last=loader.drop_last, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
        persistent_workers=loader.persistent_workers, prefetch_factor=loader.prefetch_factor,
        collate_fn=loader.collate_fn,
    )


def _peek(dataset: Dataset, collate_fn: Any, what: str, rows: int) -> Any:
    """The first `rows` items, collated (in this process, no workers): the batch structure, and targets."""
    peek = DataLoader(dataset, batch_size=rows, shuffle=False, num_workers=0, collate_fn=collate_fn)
    try:
        return next(iter(peek))
    except StopIteration:
        raise DataError(f"{what}: the dataset is empty") from None


def check_batch(batch: Any, what: str) -> None:
    if isinstance(batch, dict):
        if TARGET not in batch:
            raise ConfigError(f"{what}: dict items need a '{TARGET}' key (have: {', '.join(map(str, batch))})")
    elif not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise ConfigError(f"{what}: items must be (inputs, target) pairs or dicts with '{TARGET}'"
                          f" (got {type(batch).__name__})")
    target = batch[TARGET] if isinstance(batch, dict) else batch[1]
    if not isinstance(target, torch.Tensor):
        raise ConfigError(f"{what}: the target of a batch must be a tensor (got {type(target).__name__})")


def prepare(data: Any, *, what: str, batch_size: int, shuffle: bool, seed: int, num_workers: int | None,
            explicit_batch_size: bool) -> Prepared:
    """The loader for `data` (see the module docstring). `shuffle=False` for validation data."""
    if isinstance(data, DataLoader):
        if isinstance(data.dataset, IterableDataset):
            raise ConfigError(f"{what}: a DataLoader over an IterableDataset cannot resume exactly; use a map-style Dataset")
        if shuffle and explicit_batch_size and data.batch_size != batch_size:
            raise ConfigError(f"{what}: batch_size={batch_size} given, but the DataLoader's is {data.batch_size}")
        loader: Any = _from_dataloader(data, what, seed, shuffle)
        sample = _peek(data.dataset, data.collate_fn, what, min(data.batch_size or 1, PEEK_ROWS))
        rows, size, kind = len(data.dataset), data.batch_size or 1, "dataloader"  # type: ignore[arg-type]
    elif isinstance(data, IterableDataset):
        raise ConfigError(f"{what}: an IterableDataset has no length or index, so a run cannot resume exactly in it;"
                          " use a map-style Dataset (__len__ and __getitem__)")
    elif isinstance(data, Dataset):
        if not hasattr(data, "__len__"):
            raise ConfigError(f"{what}: the Dataset needs __len__")
        loader = DatasetLoader(data, batch_size, shuffle=shuffle, seed=seed, num_workers=num_workers)
        sample = _peek(data, None, what, min(batch_size, PEEK_ROWS))
        rows, size, kind = len(data), batch_size, "dataset"
    elif isinstance(data, (dict, tuple, list)):
        tensors, positional = _tensors(data, what)
        env = distributed.current() if shuffle else distributed.DistEnv()  # training batches: each rank its slice
        batches = BatchLoader(tensors, batch_size, shuffle=shuffle, seed=seed, rank=env.rank, world_size=env.world_size)
        loader = PairLoader(batches) if positional else batches
        sample = (tensors[INPUT], tensors[TARGET]) if positional else tensors
        rows, size, kind = batches.num_rows, batch_size, "tensors"
        if rows == 0:
            raise DataError(f"{what}: no rows")
    else:
        raise ConfigError(f"{what}: expected {EXPECTED} (got {type(data).__name__})")
    check_batch(sample, what)
    count = len(sample[TARGET] if isinstance(sample, dict) else sample[1])
    seen = f"all {count:,} targets" if kind == "tensors" else f"the first {count:,} targets"
    return Prepared(loader=loader, kind=kind, rows=rows, batch_size=size, sample=sample, seen=f"{what}: {seen}")


def sample_target(batch: Any) -> torch.Tensor:
    return batch[TARGET] if isinstance(batch, dict) else batch[1]


def _spec(name: str, tensor: torch.Tensor) -> dict[str, Any]:
    return {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": [None, *tensor.shape[1:]]}


def describe_inputs(batch: Any) -> dict[str, Any]:
    """How the model is called and with what, from a first batch: the bundle's "tensors" preprocessor.

    `call`: "positional" (`model(input)`), "keywords" (`model(**inputs)`), or "other" (inputs that are
    not one tensor or a dict of tensors: trained fine, but nothing to export or validate against).
    """
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k != TARGET}
        if all(isinstance(v, torch.Tensor) for v in inputs.values()):
            return {"kind": "tensors", "call": "keywords", "inputs": [_spec(k, v) for k, v in inputs.items()],
                    "target": _spec(TARGET, batch[TARGET])}
    elif isinstance(batch[0], torch.Tensor):
        return {"kind": "tensors", "call": "positional", "inputs": [_spec(INPUT, batch[0])],
                "target": _spec(TARGET, batch[1])}
    return {"kind": "tensors", "call": "other", "inputs": [], "target": _spec(TARGET, sample_target(batch))}
