"""Shared by the export, inspect and convert tests: one tiny trained run, the eager model's outputs on
its real rows (saved as a .pt of tensors that a process without torchkeep can read), and a pickle
that runs code when it is loaded the unsafe way."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
import torch

import torchkeep
from torchkeep.data.io import read_table


@dataclass
class TinyRun:
    run_dir: Path
    data: Path  # the CSV it was trained on
    eager: Path  # categorical, continuous, output of the eager model on `data`, and state.<key> weights


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, make_table: Callable[..., pl.DataFrame]) -> TinyRun:
    root = tmp_path_factory.mktemp("tiny-run")
    data = root / "flights.csv"
    make_table(300, seed=0).write_csv(data)
    run_dir = root / "run"
    torchkeep.train(str(data), target="late", epochs=1, batch_size=64, run_dir=str(run_dir), quiet=True)
    predictor = torchkeep.load(str(run_dir))
    inputs = predictor.schema.transform(read_table(str(data)), with_target=False)
    with torch.no_grad():
        output = predictor.model(**inputs)
    eager = root / "eager.pt"
    torch.save({**inputs, "output": output, **{f"state.{k}": v for k, v in predictor.model.state_dict().items()}}, eager)
    return TinyRun(run_dir=run_dir, data=data, eager=eager)


class RunsCode:
    """Unpickling this calls open(marker, "w"): a file appears if the pickle's code ever runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


@pytest.fixture
def planted_pickle(tmp_path: Path) -> Callable[[str], tuple[Path, Path]]:
    """`planted_pickle(name)` -> (a seed-style .pth that would create a file when loaded, that file's path)."""

    def plant(name: str) -> tuple[Path, Path]:
        marker = tmp_path / f"{name}.ran"
        path = tmp_path / name
        model = torch.nn.Linear(2, 1)
        torch.save({"epoch": 1, "model_state_dict": model.state_dict(), "note": RunsCode(marker)}, path)
        return path, marker

    return plant


NO_TORCHKEEP = """
import sys
sys.modules["torchkeep"] = None  # `import torchkeep` raises ImportError from here on
try:
    import torchkeep
except ImportError:
    pass
else:
    raise SystemExit("torchkeep is importable")
"""


@pytest.fixture(scope="session")
def without_torchkeep() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`without_torchkeep(code, *args, cwd=...)`: run `code` in a fresh interpreter that cannot import torchkeep."""

    def run(code: str, *args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", NO_TORCHKEEP + code, *map(str, args)], cwd=cwd,
                              capture_output=True, text=True, timeout=120)

    return run
