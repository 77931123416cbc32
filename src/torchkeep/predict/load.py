"""`torchkeep.load`: the predictor of a run directory or a bundle, local or s3://."""

from __future__ import annotations

from pathlib import Path

from torchkeep.bundle import read_bundle, schema_from_dict
from torchkeep.errors import CheckpointError, DataError
from torchkeep.models.build import build_model
from torchkeep.predict.exported import is_exported_file, load_exported
from torchkeep.predict.own_model import TensorPredictor, load_own_model, load_unfinished
from torchkeep.predict.predictor import Predictor
from torchkeep.storage import open_storage
from torchkeep.storage.jsonfile import read_json
from torchkeep.training.evaluate import check_device, resolve_device


def load(path: str, *, device: str = "cpu") -> Predictor | TensorPredictor:
    """A Predictor from a bundle directory, a run directory (its bundle, else its newest valid checkpoint),
    or a class-free export (`model.pt`, `model.pt2`, `model.onnx` with the schema.json written beside it).
    A model trained with torchkeep.fit comes back as a TensorPredictor (tensors in, tensors out).
    `device`: where the model runs ("cpu", "cuda", "cuda:1", "auto"); inputs and outputs stay on the CPU."""
    check_device(device)
    if is_exported_file(path):
        return load_exported(path, device=device)
    storage = open_storage(path)
    own = load_own_model(storage, path, device=resolve_device(device))
    if own is not None:
        return own
    if storage.exists("bundle/bundle.json"):
        model, schema, meta = read_bundle(storage, "bundle")
    elif storage.exists("bundle.json"):
        model, schema, meta = read_bundle(storage)
    elif storage.exists("config.json"):
        schema = schema_from_dict(read_json(storage, "schema.json", path))
        spec = read_json(storage, "model.json", path)
        model = build_model(spec["architecture"], spec["args"])
        meta = {"architecture": spec["architecture"], "checkpoint": load_unfinished(storage, model, path)}
    else:
        if "://" not in path and not Path(path).exists():
            raise DataError(f"{path}: no such run or bundle")
        raise CheckpointError(f"{path}: not a torchkeep run or bundle (no bundle.json or config.json)")
    return Predictor(model.to(resolve_device(device)), schema, meta, path)
