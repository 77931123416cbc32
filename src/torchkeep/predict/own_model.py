"""A model trained with `torchkeep.fit`, loaded back from its bundle or run: tensors in, tensors out.

`torchkeep.load` returns a TensorPredictor for these (and a table Predictor for `torchkeep train` runs).
Loading rebuilds the class by its import path (models/imported.py): it imports that module; nothing
is unpickled.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import torch
from torch import nn

from torchkeep.checkpoint import Checkpointer
from torchkeep.data.inputs import INPUT
from torchkeep.errors import CheckpointError, DataError
from torchkeep.bundle import read_bundle
from torchkeep.models.build import build_model
from torchkeep.models.imported import ARCHITECTURE
from torchkeep.storage import Storage
from torchkeep.storage.jsonfile import read_json
from torchkeep.predict.array_files import INPUT_SUFFIXES, read_inputs
from torchkeep.training.ema import ema_weights
from torchkeep.training.metrics import metrics_for_task

log = logging.getLogger("torchkeep")


class TensorPredictor:
    """A user's own model from its bundle or run: tensors in, the model's raw output (e.g. logits) out.

    `predict` takes what the model was trained on: a tensor (`model(input)`), or a dict of tensors
    (`model(**inputs)`, a "target" key is ignored); numpy arrays too; or the path of a .npy, .npz or
    .safetensors file of them (array_files.py). It checks names, dtypes and the number of dimensions
    against the training inputs, casts floats to the trained float dtype, and runs the model under
    no_grad in batches of `batch_size` rows.

    `evaluate` takes the inputs with their targets (an `(inputs, target)` pair, a dict with "target",
    or a .npz / .safetensors file with a "target" array) and returns the metrics of the run's task,
    those its validation reported; a run trained with a callable loss and callable or no metrics has
    no task on record, and evaluate says so.
    """

    def __init__(self, model: nn.Module, meta: dict[str, Any], source: str) -> None:
        self.model, self.meta, self.source = model.eval(), meta, source
        self.inputs: dict[str, Any] = meta["preprocessor"]
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    @property
    def task(self) -> str | None:
        return self.meta.get("task")

    def _checked(self, name: str, value: Any, expected: dict[str, Any]) -> torch.Tensor:
        tensor = torch.from_numpy(value) if type(value).__module__ == "numpy" else value
        if not isinstance(tensor, torch.Tensor):
            raise DataError(f"{self.source}: input '{name}' must be a tensor (got {type(value).__name__})")
        dtype = getattr(torch, expected["dtype"])
        shape = ", ".join("N" if size is None else str(size) for size in expected["shape"])
        if tensor.ndim != len(expected["shape"]) or tensor.is_floating_point() != dtype.is_floating_point:
            raise DataError(f"{self.source}: input '{name}' should be {expected['dtype']} [{shape}], got"
                            f" {str(tensor.dtype).removeprefix('torch.')} [{', '.join(map(str, tensor.shape))}]")
        return tensor.to(dtype) if tensor.is_floating_point() else tensor

    def predict(self, data: Any, *, batch_size: int = 1024) -> torch.Tensor:
        call, expected = self.inputs["call"], {spec["name"]: spec for spec in self.inputs["inputs"]}
        if isinstance(data, str) and data.lower().endswith(INPUT_SUFFIXES):
            data = read_inputs(data, self.inputs)[0]
        if isinstance(data, str) or hasattr(data, "columns"):
            raise DataError(f"{self.source}: a model trained with torchkeep.fit takes tensors, not tables:"
                            " torchkeep.load(...).predict(tensor), or a .npy, .npz or .safetensors file of them")
        if call == "other":
            with torch.no_grad():
                return self.model(data)
        if call == "positional":
            given = {INPUT: data[INPUT] if isinstance(data, dict) else data}
        elif not isinstance(data, dict):
            raise DataError(f"{self.source}: the model takes a dict of tensors named {', '.join(expected)}")
        else:
            given = {k: v for k, v in data.items() if k != "target"}
        if set(given) != set(expected):
            raise DataError(f"{self.source}: the model takes inputs {sorted(expected)}, got {sorted(given)}")
        tensors = {name: self._checked(name, value, expected[name]) for name, value in given.items()}
        rows = len(next(iter(tensors.values())))
        outputs = []
        with torch.no_grad():
            for start in range(0, rows, batch_size):
                chunk = {name: t[start : start + batch_size].to(self.device) for name, t in tensors.items()}
                output = self.model(chunk[INPUT]) if call == "positional" else self.model(**chunk)
                outputs.append(output.cpu())
        return torch.cat(outputs)

    def evaluate(self, data: Any, **_: Any) -> dict[str, float]:
        if self.task is None:
            raise DataError(f"{self.source}: no metrics on record to evaluate with: the run's metrics were a callable or"
                            " None (or its loss a callable, with metrics='auto'), and a bundle keeps no code; train with"
                            " metrics='binary' | 'multiclass' | 'regression', or compute yours on"
                            " torchkeep.load(...).predict(inputs) in Python")
        if isinstance(data, str):
            inputs, target = read_inputs(data, self.inputs, with_target=True)
        elif isinstance(data, dict):
            if "target" not in data:
                raise DataError(f"{self.source}: evaluate needs the targets: a dict with a 'target' tensor")
            inputs, target = data, data["target"]
        elif isinstance(data, (tuple, list)) and len(data) == 2:
            inputs, target = data
        else:
            raise DataError(f"{self.source}: evaluate takes an (inputs, target) pair, a dict of tensors with 'target',"
                            " or a .npz / .safetensors file with a 'target' array")
        target = torch.from_numpy(target) if type(target).__module__ == "numpy" else target
        return metrics_for_task(self.task)(self.predict(inputs), target)


def is_own_run(storage: Storage) -> bool:
    """Whether a run directory holds a run of torchkeep.fit (a user's own model)."""
    return storage.exists("model.json") and read_json(storage, "model.json", storage.uri).get("architecture") == ARCHITECTURE


def load_own_model(storage: Storage, path: str, device: torch.device | None = None) -> TensorPredictor | None:
    """A TensorPredictor for a bundle or run of a user's own model (on `device`, default CPU); None for anything else."""
    device = device or torch.device("cpu")
    for prefix in ("bundle", ""):
        key = f"{prefix}/bundle.json" if prefix else "bundle.json"
        if storage.exists(key):
            try:
                architecture = json.loads(storage.read(key)).get("architecture")
            except ValueError:
                return None  # load() (predict/load.py) reports the damaged bundle
            if architecture != ARCHITECTURE:
                return None
            model, _, meta = read_bundle(storage, prefix)
            return TensorPredictor(model.to(device), meta, path)
    if not is_own_run(storage):
        return None
    spec = read_json(storage, "model.json", storage.uri)
    model = build_model(ARCHITECTURE, spec["args"])
    meta = {"architecture": ARCHITECTURE, "model_args": spec["args"], "preprocessor": spec["inputs"],
            "task": spec.get("task"), "checkpoint": load_unfinished(storage, model, path)}
    return TensorPredictor(model.to(device), meta, path)


def load_unfinished(storage: Storage, model: nn.Module, path: str) -> str:
    """For a run without a bundle (training did not finish): its newest valid checkpoint's weights into
    `model` (their average, when it trained with ema_decay: what it validated), with a warning; the
    checkpoint's name. One clear line when there is none."""
    restored = Checkpointer(storage).restore(model=model, restore_rng=False)
    if restored is None:
        raise CheckpointError(f"{path}: the run has no bundle and no valid checkpoint to load")
    if (averaged := ema_weights(restored.extra)) is not None:
        model.load_state_dict(averaged)
    log.warning("%s has no bundle (training did not finish); using checkpoint %s", path, restored.name)
    return restored.name
