"""`torchkeep datasets`: the example datasets that ship with torchkeep."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("datasets", help="list the built-in example datasets",
                            description="Built-in datasets train offline: torchkeep train --example NAME")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchkeep.data.builtin import EXAMPLES

    for example in EXAMPLES.values():
        what = "images" if example.kind == "image" else "rows"
        print(f"{example.name}: {example.rows:,} {what}, target '{example.target}' ({example.task})")
        print(f"  {example.description}")
        print(f"  source: {example.source}; licence: {example.licence}")
        print(f"  file: {example.path}")
    return 0
