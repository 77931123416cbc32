"""A Predictor over a class-free export: a TorchScript `.pt`, a torch.export `.pt2` or an ONNX file,
with the `schema.json` and `inputs.json` that `torchkeep export` writes beside it. Rows go through the
same `schema.transform` and the outputs through the same `schema.decode` as the run's own model, so
an exported file predicts, evaluates and serves like its bundle."""

from __future__ import annotations

import io
import json
import posixpath
import warnings
from typing import Any

import torch
from torch import nn

from torchkeep.bundle import schema_from_dict
from torchkeep.errors import CheckpointError, ConfigError
from torchkeep.predict.predictor import Predictor
from torchkeep.storage import open_storage

FORMATS = {".pt": "torchscript", ".pt2": "pt2", ".onnx": "onnx"}


class ExportedModule(nn.Module):
    """An exported program called like the eager model: forward(**tensors) -> outputs, on the CPU."""

    def __init__(self, program: Any, input_names: list[str]) -> None:
        super().__init__()
        self.program, self.input_names = program, input_names
        # Predictor finds the device of a model from its parameters: the program itself has none to show.
        self.device_marker = nn.Parameter(torch.zeros(0), requires_grad=False)

    def forward(self, **tensors: torch.Tensor) -> torch.Tensor:
        return self.program(*(tensors[name] for name in self.input_names))

    def train(self, mode: bool = True) -> ExportedModule:
        return self  # an exported program has no training mode (torch.export's modules refuse eval())


def is_exported_file(path: str) -> bool:
    return posixpath.splitext(path.rstrip("/"))[1] in FORMATS


def load_exported(path: str, *, device: str = "cpu") -> Predictor:
    if device not in ("cpu", "auto"):
        raise ConfigError(f"{path}: an exported file runs on the CPU here; load its run or bundle for --device {device}")
    folder, name = posixpath.split(path.rstrip("/"))
    storage = open_storage(folder or ".")
    for required in (name, "schema.json", "inputs.json"):
        if not storage.exists(required):
            raise CheckpointError(f"{path}: {required} not found{'' if required == name else ' beside it'};"
                                  " expected a file written by `torchkeep export` (class-free formats)")
    try:
        inputs = json.loads(storage.read("inputs.json"))
        schema = schema_from_dict(json.loads(storage.read("schema.json")))
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{path}: schema.json / inputs.json beside it cannot be read ({error})") from error
    expected = FORMATS[posixpath.splitext(name)[1]]
    if inputs.get("format") != expected or inputs.get("file") != name:
        raise CheckpointError(f"{path}: inputs.json beside it describes {inputs.get('file')!r} ({inputs.get('format')}),"
                              f" not this {expected} file")
    names = [spec["name"] for spec in inputs["inputs"]]
    program = _program(expected, storage.read(name), names)
    meta = {"architecture": f"exported {expected}", "task": inputs.get("task")}
    return Predictor(ExportedModule(program, names), schema, meta, path)


def _program(export_format: str, data: bytes, names: list[str]) -> Any:
    if export_format == "torchscript":
        with warnings.catch_warnings():  # torch's own deprecation notice of TorchScript, once per load
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(io.BytesIO(data), map_location="cpu")
    if export_format == "pt2":
        return torch.export.load(io.BytesIO(data)).module()
    try:
        import onnxruntime
    except ImportError as error:
        raise ConfigError("reading ONNX files needs onnxruntime: pip install 'torchkeep[onnx]'") from error
    session = onnxruntime.InferenceSession(bytes(data), providers=["CPUExecutionProvider"])

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        feeds = {name: tensor.numpy() for name, tensor in zip(names, tensors, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run
