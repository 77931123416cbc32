"""The class-free export formats: an eager model to bytes, and those bytes back to something callable.

Every format takes the already-encoded tensors of `TableSchema.transform`: `categorical` int64
[N, C] and `continuous` float32 [N, K] (and, for a model with text columns, `text` int32 [N, T, L]
token ids), with N dynamic; its output is the model's raw output
(`output`: [N], or [N, classes] for multiclass). `load` is what the parity check runs, so what is
checked is the file as written, not the object it came from.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from torchkeep.errors import MissingExtraError

INPUT_NAMES = ("categorical", "continuous")
TEXT_INPUT_NAME = "text"  # a third input, only for models with text columns
OUTPUT_NAME = "output"

Inputs = tuple[torch.Tensor, ...]
Runner = Callable[..., torch.Tensor]


def input_names(inputs: dict[str, torch.Tensor] | Inputs) -> tuple[str, ...]:
    """The model's positional inputs, in order: categorical, continuous (and text when present)."""
    return (*INPUT_NAMES, TEXT_INPUT_NAME)[: len(inputs)] if isinstance(inputs, tuple) else (
        (*INPUT_NAMES, TEXT_INPUT_NAME) if TEXT_INPUT_NAME in inputs else INPUT_NAMES)


@dataclass(frozen=True, kw_only=True)
class ExportFormat:
    name: str
    file_name: str  # written inside --out when --out does not name the file itself
    suffixes: tuple[str, ...]  # an --out ending in one of these is the file
    serialize: Callable[[nn.Module, Inputs], bytes]
    load: Callable[[bytes, Callable[[], nn.Module]], Runner]  # (bytes, rebuild the eager class) -> runner
    loading: str  # how to run it from Python, for README.txt


def _dynamic_batch(example: Inputs) -> tuple[dict[int, torch.export.Dim], ...]:
    batch = torch.export.Dim("batch", min=1)
    return tuple({0: batch} for _ in example)


def _state_dict_bytes(model: nn.Module, example: Inputs) -> bytes:
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def _state_dict_load(data: bytes, rebuild: Callable[[], nn.Module]) -> Runner:
    model = rebuild()
    model.load_state_dict(torch.load(io.BytesIO(data), weights_only=True, map_location="cpu"))
    return model.eval()


def _torchscript_bytes(model: nn.Module, example: Inputs) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream; still loads in C++
        torch.jit.save(torch.jit.script(model), buffer)
    return buffer.getvalue()


def _torchscript_load(data: bytes, rebuild: Callable[[], nn.Module]) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


def _pt2_bytes(model: nn.Module, example: Inputs) -> bytes:
    program = torch.export.export(model, example, dynamic_shapes=_dynamic_batch(example))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _pt2_load(data: bytes, rebuild: Callable[[], nn.Module]) -> Runner:
    return torch.export.load(io.BytesIO(data)).module()


def _require_onnx() -> None:
    for package in ("onnx", "onnxscript", "onnxruntime"):  # onnxscript: torch.onnx's dynamo exporter
        try:
            __import__(package)
        except ImportError:
            raise MissingExtraError(package, "onnx") from None


@contextmanager
def quiet_onnx_export() -> Iterator[None]:
    """torch.onnx's export chatter ("torchvision is not installed" and the like) is not about the model."""
    _require_onnx()
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        quiet.setLevel(level)


def _onnx_bytes(model: nn.Module, example: Inputs) -> bytes:
    with quiet_onnx_export():
        program = torch.onnx.export(model, example, None, input_names=list(input_names(example)),
                                    output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic_batch(example),
                                    dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


def _onnx_load(data: bytes, rebuild: Callable[[], nn.Module]) -> Runner:
    _require_onnx()
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])

    def run(*inputs: torch.Tensor) -> torch.Tensor:
        feeds = {name: tensor.numpy() for name, tensor in zip(input_names(inputs), inputs, strict=True)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


FORMATS = {
    f.name: f
    for f in (
        ExportFormat(name="state-dict", file_name="model.pth", suffixes=(".pth", ".pt"), serialize=_state_dict_bytes,
                     load=_state_dict_load,
                     loading="from torchkeep import EntityEmbeddingMLP  # or any module with these layers\n"
                             'model = EntityEmbeddingMLP(**json.load(open("inputs.json"))["model"]["args"])\n'
                             'model.load_state_dict(torch.load("{file}", weights_only=True))\n'
                             "model.eval()\noutput = model(categorical, continuous)"),
        ExportFormat(name="torchscript", file_name="model.pt", suffixes=(".pt",), serialize=_torchscript_bytes,
                     load=_torchscript_load,
                     loading='model = torch.jit.load("{file}")  # or torch::jit::load in C++\n'
                             "output = model(categorical, continuous)"),
        ExportFormat(name="pt2", file_name="model.pt2", suffixes=(".pt2",), serialize=_pt2_bytes, load=_pt2_load,
                     loading='model = torch.export.load("{file}").module()\noutput = model(categorical, continuous)'),
        ExportFormat(name="onnx", file_name="model.onnx", suffixes=(".onnx",), serialize=_onnx_bytes, load=_onnx_load,
                     loading='session = onnxruntime.InferenceSession("{file}")\n'
                             'output = session.run(None, {{"categorical": categorical, "continuous": continuous}})[0]'),
    )
}
