"""BatchLoader and DatasetLoader: every row once per epoch, seeded order, exact mid-epoch resume.

Every table here carries an `id` column (the row number), so a test can say which rows a batch
holds and in which order.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from torchkeep import BatchLoader, DatasetLoader

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata, not ours


def table(rows: int) -> dict[str, torch.Tensor]:
    """An id column plus the kinds of tensors a TableSchema produces (int codes, float features)."""
    ids = torch.arange(rows)
    return {
        "id": ids,
        "codes": torch.stack([ids % 7, ids % 3], dim=1),
        "features": ids.float()[:, None].repeat(1, 4) / rows,
        "target": (ids % 2).float(),
    }


def ids_of(batches) -> list[list[int]]:
    return [batch["id"].tolist() for batch in batches]


def one_epoch(loader) -> list[list[int]]:
    return ids_of(loader)


def flat(batches: list[list[int]]) -> list[int]:
    return [row for batch in batches for row in batch]


def through_json(state: dict) -> dict:
    """What a checkpoint keeps of a loader's state: it goes through JSON."""
    return json.loads(json.dumps(state))


# -- BatchLoader ---------------------------------------------------------------------------------


def test_every_row_exactly_once_per_epoch() -> None:
    loader = BatchLoader(table(1_003), batch_size=64, seed=3)
    for _ in range(3):
        batches = one_epoch(loader)
        assert sorted(flat(batches)) == list(range(1_003))
        assert [len(b) for b in batches] == [64] * 15 + [43]
    assert loader.epoch == 3 and loader.position == 0


def test_rows_stay_together_in_a_batch() -> None:
    """Gathering by row index keeps every tensor of a row on the same row of the batch."""
    loader = BatchLoader(table(500), batch_size=32, seed=0)
    for batch in loader:
        ids = batch["id"]
        assert torch.equal(batch["codes"][:, 0], ids % 7)
        assert torch.equal(batch["codes"][:, 1], ids % 3)
        assert torch.equal(batch["features"][:, 2], ids.float() / 500)
        assert torch.equal(batch["target"], (ids % 2).float())


def test_same_seed_same_order_other_seed_or_next_epoch_another() -> None:
    first = BatchLoader(table(400), batch_size=50, seed=7)
    again = BatchLoader(table(400), batch_size=50, seed=7)
    other = BatchLoader(table(400), batch_size=50, seed=8)

    epoch0 = flat(one_epoch(first))
    assert flat(one_epoch(again)) == epoch0
    assert flat(one_epoch(other)) != epoch0
    assert epoch0 != list(range(400))  # shuffled at all

    epoch1 = flat(one_epoch(first))
    assert epoch1 != epoch0
    assert flat(one_epoch(again)) == epoch1  # the order of every epoch is fixed by (seed, epoch)


def test_no_shuffle_reads_rows_in_order() -> None:
    loader = BatchLoader(table(10), batch_size=4, shuffle=False)
    assert one_epoch(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert one_epoch(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize(
    ("rows", "batch_size", "drop_last", "batches", "last"),
    [
        (103, 10, False, 11, 3),
        (103, 10, True, 10, 10),
        (100, 10, False, 10, 10),
        (100, 10, True, 10, 10),
        (5, 10, False, 1, 5),
        (5, 10, True, 0, None),
    ],
)
def test_len_and_drop_last(rows: int, batch_size: int, drop_last: bool, batches: int, last: int | None) -> None:
    loader = BatchLoader(table(rows), batch_size=batch_size, drop_last=drop_last, seed=1)
    assert len(loader) == batches
    got = one_epoch(loader)
    assert len(got) == batches
    if last is not None:
        assert len(got[-1]) == last
    assert all(len(b) == batch_size for b in got[:-1])
    if drop_last:
        assert len(set(flat(got))) == batches * batch_size
    else:
        assert sorted(flat(got)) == list(range(rows))


def test_drop_last_drops_different_rows_each_epoch() -> None:
    """Rows left over by drop_last are a different random few each epoch, not always the same ones."""
    loader = BatchLoader(table(105), batch_size=10, drop_last=True, seed=0)
    dropped = [set(range(105)) - set(flat(one_epoch(loader))) for _ in range(4)]
    assert all(len(d) == 5 for d in dropped)
    assert len({frozenset(d) for d in dropped}) > 1


def uninterrupted(rows: int, batch_size: int, epochs: int, **options) -> list[list[int]]:
    loader = BatchLoader(table(rows), batch_size=batch_size, **options)
    return [batch for _ in range(epochs) for batch in one_epoch(loader)]


@pytest.mark.parametrize("stop_after", [0, 1, 5, 12, 13, 14, 20, 27])
def test_state_dict_mid_epoch_resumes_on_exactly_the_next_batch(stop_after: int) -> None:
    """Stop after `stop_after` batches (13 per epoch), save the state, resume in a fresh loader."""
    rows, batch_size, epochs = 200, 16, 3
    expected = uninterrupted(rows, batch_size, epochs, seed=11)

    loader = BatchLoader(table(rows), batch_size=batch_size, seed=11)
    seen: list[list[int]] = []
    while len(seen) < stop_after:
        for batch in loader:
            seen.append(batch["id"].tolist())
            if len(seen) == stop_after:
                break
    state = through_json(loader.state_dict())
    del loader

    resumed = BatchLoader(table(rows), batch_size=batch_size, seed=11)
    resumed.load_state_dict(state)
    while resumed.epoch < epochs:
        seen.extend(one_epoch(resumed))
    assert seen == expected


def test_state_dict_holds_the_seed() -> None:
    """A loader built with another seed still resumes the saved run's order."""
    expected = uninterrupted(90, 10, 2, seed=5)
    loader = BatchLoader(table(90), batch_size=10, seed=5)
    iterator = iter(loader)
    seen = [next(iterator)["id"].tolist() for _ in range(4)]

    resumed = BatchLoader(table(90), batch_size=10, seed=999)
    resumed.load_state_dict(through_json(loader.state_dict()))
    seen += one_epoch(resumed) + one_epoch(resumed)
    assert seen == expected


def test_resume_with_data_of_another_size_is_refused() -> None:
    from torchkeep import DataError

    loader = BatchLoader(table(90), batch_size=10)
    state = loader.state_dict()
    with pytest.raises(DataError, match="90 rows but the data has 91"):
        BatchLoader(table(91), batch_size=10).load_state_dict(state)


def test_large_table_crosses_gather_chunks_and_resumes_across_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than one gather chunk: every row once, and a resume inside the second chunk."""
    from torchkeep.data import loader as loader_module

    monkeypatch.setattr(loader_module, "CHUNK_BYTES", 8 * 131_072)  # int64 ids: 131,072 rows a chunk
    rows, batch_size = 300_001, 1_000
    ids = {"id": torch.arange(rows)}
    loader = BatchLoader(ids, batch_size=batch_size, seed=2)
    expected = one_epoch(loader)
    assert len(expected) == 301
    assert torch.equal(torch.tensor(flat(expected)).sort().values, torch.arange(rows))

    loader = BatchLoader(ids, batch_size=batch_size, seed=2)
    iterator = iter(loader)
    seen = [next(iterator)["id"].tolist() for _ in range(200)]
    resumed = BatchLoader(ids, batch_size=batch_size, seed=2)
    resumed.load_state_dict(through_json(loader.state_dict()))
    assert seen + one_epoch(resumed) == expected


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("rows", [100, 103])
def test_ranks_read_disjoint_rows_of_equal_count(shuffle: bool, rows: int) -> None:
    world_size = 4
    loaders = [
        BatchLoader(table(rows), batch_size=8, shuffle=shuffle, seed=4, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    for _ in range(2):
        per_rank = [flat(one_epoch(loader)) for loader in loaders]
        assert {len(rows_of_rank) for rows_of_rank in per_rank} == {rows // world_size}
        assert len({len(loader) for loader in loaders}) == 1  # every rank steps the same number of times
        union = set().union(*per_rank)
        assert len(union) == sum(len(r) for r in per_rank)  # disjoint
        assert len(union) == rows - rows % world_size
        assert union <= set(range(rows))


def test_one_rank_resumes_its_own_shard() -> None:
    expected = uninterrupted(100, 5, 2, seed=1, rank=1, world_size=3)
    loader = BatchLoader(table(100), batch_size=5, seed=1, rank=1, world_size=3)
    iterator = iter(loader)
    seen = [next(iterator)["id"].tolist() for _ in range(3)]
    resumed = BatchLoader(table(100), batch_size=5, seed=1, rank=1, world_size=3)
    resumed.load_state_dict(through_json(loader.state_dict()))
    seen += one_epoch(resumed) + one_epoch(resumed)
    assert seen == expected


# -- DatasetLoader (a user's own map-style Dataset: the slow path) -------------------------------


class Squares(Dataset):
    """A user's Dataset: one (x, y) pair per `__getitem__`, the way the seeds' notes write it."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.tensor([float(index)])
        return x, x**2


def rows_of(batches) -> list[list[int]]:
    return [batch[0][:, 0].long().tolist() for batch in batches]


def dataset_loader(seed: int = 0, **options) -> DatasetLoader:
    return DatasetLoader(Squares(45), batch_size=8, seed=seed, num_workers=0, **options)


def test_dataset_loader_every_row_once_and_seeded() -> None:
    loader = dataset_loader(seed=3)
    assert len(loader) == 6
    epoch0 = rows_of(loader)
    assert sorted(flat(epoch0)) == list(range(45))
    assert [len(b) for b in epoch0] == [8] * 5 + [5]
    assert flat(epoch0) != list(range(45))
    assert loader.epoch == 1 and loader.position == 0

    epoch1 = rows_of(loader)
    assert flat(epoch1) != flat(epoch0)
    same_seed = dataset_loader(seed=3)
    assert rows_of(same_seed) == epoch0
    assert rows_of(same_seed) == epoch1
    assert rows_of(dataset_loader(seed=4)) != epoch0


def test_dataset_loader_batches_are_x_y_pairs() -> None:
    x, y = next(iter(dataset_loader()))
    assert x.shape == (8, 1) and torch.equal(y, x**2)


def test_dataset_loader_drop_last() -> None:
    loader = dataset_loader(drop_last=True)
    assert len(loader) == 5
    assert [len(b) for b in rows_of(loader)] == [8] * 5


def test_dataset_loader_no_shuffle() -> None:
    assert flat(rows_of(dataset_loader(shuffle=False))) == list(range(45))


def stop_dataset_loader_after(batches: int, seed: int = 0) -> tuple[list[list[int]], dict]:
    loader = dataset_loader(seed=seed)
    seen: list[list[int]] = []
    for batch in loader:
        seen.append(batch[0][:, 0].long().tolist())
        if len(seen) == batches:
            break
    return seen, loader.state_dict()


@pytest.mark.parametrize("stop_after", [1, 3, 5])
def test_dataset_loader_resumes_the_rest_of_the_epoch(stop_after: int) -> None:
    expected = rows_of(dataset_loader(seed=2))
    seen, state = stop_dataset_loader_after(stop_after, seed=2)
    assert state["epoch"] == 0 and state["position"] == stop_after

    resumed = dataset_loader(seed=2)
    resumed.load_state_dict(state)
    assert seen + rows_of(resumed) == expected
    assert resumed.epoch == 1 and resumed.position == 0


@pytest.mark.parametrize("stop_after", [3, 6])
def test_dataset_loader_resume_keeps_the_order_of_later_epochs(stop_after: int) -> None:
    """Stop mid-epoch (3) or right at the end of the epoch (6 of 6): epochs 1 and 2 must not change."""
    reference = dataset_loader(seed=2)
    expected = [rows_of(reference) for _ in range(3)]
    seen, state = stop_dataset_loader_after(stop_after, seed=2)

    resumed = dataset_loader(seed=2)
    resumed.load_state_dict(state)
    rest = rows_of(resumed)
    assert seen + rest == expected[0]
    assert [rows_of(resumed), rows_of(resumed)] == expected[1:]
