"""BatchLoader across processes: every epoch's seeded order cut into global batches (world x batch_size
consecutive samples), each rank taking its slice; the saved position is global, so a run stopped with one
world size resumes with another at exactly the next unseen sample."""

from __future__ import annotations

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from torchkeep.data.loader import BatchLoader


def ids(rows: int) -> dict[str, torch.Tensor]:
    return {"id": torch.arange(rows)}


def ranks(rows: int, batch_size: int, world: int, seed: int, shuffle: bool = True) -> list[BatchLoader]:
    return [BatchLoader(ids(rows), batch_size, seed=seed, shuffle=shuffle, rank=rank, world_size=world)
            for rank in range(world)]


def epoch_order(rows: int, seed: int, shuffle: bool = True) -> list[int]:
    """The epoch's sample order, as one process reads it."""
    (loader,) = ranks(rows, 7, 1, seed, shuffle)
    return [i for batch in loader for i in batch["id"].tolist()]


def global_batches(loaders: list[BatchLoader], count: int | None = None) -> list[int]:
    """`count` global batches (all when None): each rank's next batch, rank 0's rows first."""
    iterators = [iter(loader) for loader in loaders]
    seen: list[int] = []
    done = 0
    while count is None or done < count:
        batches = [next(iterator, None) for iterator in iterators]
        if batches[0] is None:
            assert all(batch is None for batch in batches), "ranks must run out of batches together"
            break
        seen += [i for batch in batches for i in batch["id"].tolist()]  # type: ignore[index]
        done += 1
    return seen


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 300), batch_size=st.integers(1, 20), world=st.integers(1, 5), seed=st.integers(0, 99),
       shuffle=st.booleans())
def test_every_sample_once_per_epoch_across_ranks(rows, batch_size, world, seed, shuffle):
    loaders = ranks(rows, batch_size, world, seed, shuffle)
    for epoch in range(2):
        per_rank = [[i for batch in loader for i in batch["id"].tolist()] for loader in loaders]
        seen = [i for rank in per_rank for i in rank]
        assert len(seen) == len(set(seen))  # no sample twice
        assert len(seen) == rows - rows % world  # at most world - 1 left for another epoch
        assert max(map(len, per_rank)) - min(map(len, per_rank)) <= 1  # equal shares
        assert {len(loader) for loader in loaders} == {-(-(rows - rows % world) // (batch_size * world))}
        if world == 1 and epoch == 0:
            assert seen == epoch_order(rows, seed, shuffle)  # one process: today's batches


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 300), batch_size=st.integers(1, 20), before=st.integers(1, 4), after=st.integers(1, 4),
       seed=st.integers(0, 99), stop=st.integers(0, 60))
def test_a_resume_at_another_world_size_continues_at_the_next_unseen_sample(rows, batch_size, before, after, seed,
                                                                               stop):
    order = epoch_order(rows, seed)
    first = ranks(rows, batch_size, before, seed)
    assume(stop <= len(first[0]))  # stopped within the first epoch (its last batch included)
    seen = global_batches(first, stop)
    states = [loader.state_dict() for loader in first]
    assert all(state == states[0] for state in states)  # the position is global: one state for every rank
    assert seen == order[: len(seen)]  # the order's prefix, in order

    second = ranks(rows, batch_size, after, seed)
    for loader in second:
        loader.load_state_dict(states[0])
    rest = global_batches(second)
    assert seen + rest == order[: len(seen) + len(rest)]  # exactly the next unseen sample, none twice
    assert rows - len(seen) - len(rest) < 2 * after  # none skipped but the last few that the world size cannot split
    assert all(loader.epoch == 1 and loader.position == 0 for loader in second)
