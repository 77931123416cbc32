"""Quantiles of a column too large to hold: a mergeable sketch of compactors (KLL, Karnin, Lang and
Liberty 2016), with every level of the same capacity.

Values enter level 0 with weight 1. A level holding more than `capacity` values is sorted and
compacted: every other value (starting at a seeded random offset) moves up a level with twice the
weight, so the total weight stays the row count exactly. Each compaction at level h moves the rank
of any value by at most 2**h, up or down at random, so the errors mostly cancel.

Tolerance: until a column has more than `capacity` (32,768) values no compaction happens and the
quantiles are numpy's own (linear interpolation), exactly. Beyond that, the rank error of a quantile
is at most log2(n / capacity) / capacity of the rows (0.05% at a billion rows) and typically about
1.5 / capacity (0.005%); tests/data/test_sketch.py measures it. Deterministic: the same values in the
same order give the same quantiles.
"""

from __future__ import annotations

import numpy as np

CAPACITY = 1 << 15


class QuantileSketch:
    def __init__(self, capacity: int = CAPACITY, seed: int = 0) -> None:
        self.capacity = capacity
        self.count = 0
        self.levels: list[list[np.ndarray]] = [[]]  # level h: arrays of values that weigh 2**h each
        self.sizes = [0]
        self._rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        """Add float values (nulls already left out)."""
        if len(values) == 0:
            return
        self.count += len(values)
        self._put(0, np.asarray(values, dtype=np.float64))

    def merge(self, other: QuantileSketch) -> None:
        """Add everything `other` has seen (its values keep their weights)."""
        self.count += other.count
        for level, arrays in enumerate(other.levels):
            for array in arrays:
                self._put(level, array)

    def _put(self, level: int, values: np.ndarray) -> None:
        while level >= len(self.levels):
            self.levels.append([])
            self.sizes.append(0)
        self.levels[level].append(values)
        self.sizes[level] += len(values)
        if self.sizes[level] > self.capacity:
            items = np.sort(np.concatenate(self.levels[level]))
            if len(items) % 2:  # the odd one stays: the total weight is kept exactly
                kept, items = items[-1:], items[:-1]
            else:
                kept = items[:0]
            offset = int(self._rng.integers(2))
            self.levels[level], self.sizes[level] = [kept], len(kept)
            self._put(level + 1, items[offset::2].copy())

    def quantiles(self, qs: np.ndarray | list[float]) -> np.ndarray:
        """The values at quantiles `qs` (0..1) with linear interpolation between ranks, as numpy's."""
        qs = np.asarray(qs, dtype=np.float64)
        if self.count == 0:
            return np.full(len(qs), np.nan)
        if len(self.levels) == 1:  # nothing compacted: exact
            return np.quantile(np.concatenate(self.levels[0]), qs)
        values = np.concatenate([array for arrays in self.levels for array in arrays])
        weights = np.concatenate([np.full(len(array), 2.0**level) for level, arrays in enumerate(self.levels)
                                  for array in arrays])
        order = np.argsort(values, kind="stable")
        values, cumulative = values[order], np.cumsum(weights[order])
        ranks = qs * (self.count - 1)
        low, high = np.floor(ranks), np.ceil(ranks)
        at_low = values[np.minimum(np.searchsorted(cumulative, low, side="right"), len(values) - 1)]
        at_high = values[np.minimum(np.searchsorted(cumulative, high, side="right"), len(values) - 1)]
        return at_low + (ranks - low) * (at_high - at_low)
