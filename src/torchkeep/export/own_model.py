"""Exports of a user's own model (trained with `torchkeep.fit`): tensors in, the model's output out.

The table path (formats.py, describe.py) feeds encoded `categorical` / `continuous` tensors; this
one feeds the tensors the model was trained on, as recorded from the first training batch in the
bundle's "tensors" preprocessor: `input` for `model(input)`, or the names of `model(**inputs)`,
with a dynamic batch dimension. The export is traced on 8 rows and checked against the eager model
on 64 other rows (max abs diff <= 1e-5): rows of `--data FILE.safetensors` (tensors named like the
inputs), else generated ones, floats standard normal and integers / booleans zero (in range for
any embedding). Next to a class-free file go inputs.json and README.txt.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from typing import Any

import torch
from torch import nn

from torchkeep.bundle import read_bundle, versions, write_bundle
from torchkeep.errors import CheckpointError, ConfigError, DataError, TorchkeepError
from torchkeep.export.result import FORMAT_NAMES, ExportResult, target_paths
from torchkeep.export.formats import FORMATS, OUTPUT_NAME, quiet_onnx_export
from torchkeep.export.parity import Parity, compare_outputs
from torchkeep.models.imported import ARCHITECTURE
from torchkeep.storage import open_storage

EXAMPLE_ROWS, PARITY_ROWS = 8, 64
Call = tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]  # (args, kwargs) of one model call

LOADING = {
    "state-dict": "from {module} import {name}\n"
                  'model = {name}(**json.load(open("inputs.json"))["model"]["args"])\n'
                  'model.load_state_dict(torch.load("{file}", weights_only=True))\nmodel.eval()\noutput = model({call})',
    "torchscript": 'model = torch.jit.load("{file}")  # or torch::jit::load in C++\noutput = model({call})',
    "pt2": 'model = torch.export.load("{file}").module()\noutput = model({call})',
    "onnx": 'session = onnxruntime.InferenceSession("{file}")\noutput = session.run(None, {{{feeds}}})[0]',
}


def _inputs(preprocessor: dict[str, Any], rows: int, data: str | None) -> Call:
    """One call's worth of inputs: `rows` rows of `data` (a .safetensors file), else generated."""
    if preprocessor["call"] == "other" or not preprocessor["inputs"]:
        raise ConfigError("the model's inputs are not one tensor or a dict of tensors, so there is nothing to trace an"
                          " export with; export it yourself from torchkeep.load(...).model")
    tensors: dict[str, torch.Tensor] = {}
    if data is not None:
        if not data.endswith(".safetensors"):
            raise DataError(f"{data}: for a model trained with torchkeep.fit, --data is a .safetensors file of input"
                            f" tensors named {', '.join(s['name'] for s in preprocessor['inputs'])}")
        from safetensors.torch import load as load_tensors

        found = load_tensors(bytes(open_storage(data.rpartition("/")[0] or ".").read(data.rpartition("/")[2])))
    generator = torch.Generator().manual_seed(0)
    for spec in preprocessor["inputs"]:
        dtype, shape = getattr(torch, spec["dtype"]), [rows, *spec["shape"][1:]]
        if data is not None:
            if spec["name"] not in found:
                raise DataError(f"{data}: no tensor named '{spec['name']}' (has: {', '.join(found) or 'none'})")
            tensors[spec["name"]] = found[spec["name"]][:rows].to(dtype)
        elif dtype.is_floating_point:
            tensors[spec["name"]] = torch.randn(shape, generator=generator).to(dtype)
        else:
            tensors[spec["name"]] = torch.zeros(shape, dtype=dtype)
    if preprocessor["call"] == "positional":
        return (tensors["input"],), {}
    return (), tensors


def _head(call: Call, rows: int) -> Call:
    args, kwargs = call
    head = max(2, rows)  # at least 2 rows, so that the batch size is not specialized to 1

    def repeat(tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:head] if len(tensor) >= head else tensor.repeat(head, *[1] * (tensor.ndim - 1))[:head]

    return tuple(repeat(t) for t in args), {k: repeat(v) for k, v in kwargs.items()}


def _dynamic(call: Call) -> Any:
    batch = torch.export.Dim("batch", min=1)
    args, kwargs = call
    return tuple({0: batch} for _ in args) if args else {name: {0: batch} for name in kwargs}


def _torchscript(model: nn.Module, example: Call) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; tracing warns about constants
        try:
            scripted = torch.jit.script(model)
        except Exception:  # noqa: BLE001 (a model TorchScript cannot compile: trace it instead; the parity check guards it)
            args, kwargs = example
            scripted = torch.jit.trace(model, example_inputs=args or None, example_kwarg_inputs=kwargs or None)
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def _pt2(model: nn.Module, example: Call) -> bytes:
    program = torch.export.export(model, example[0], example[1], dynamic_shapes=_dynamic(example))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _onnx(model: nn.Module, example: Call, names: list[str]) -> bytes:
    with quiet_onnx_export():
        program = torch.onnx.export(model, example[0], None, kwargs=example[1] or None, input_names=names,
                                    output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic(example), dynamo=True,
                                    verbose=False)
    return program.model_proto.SerializeToString()


def _serialize(format: str, model: nn.Module, example: Call, names: list[str]) -> tuple[bytes, Any]:
    """(bytes, a callable(*args, **kwargs) that runs those bytes)."""
    if format == "state-dict":
        blob = FORMATS["state-dict"].serialize(model, example)  # type: ignore[arg-type]
        return blob, FORMATS["state-dict"].load(blob, lambda: copy.deepcopy(model))
    if format == "torchscript":
        blob = _torchscript(model, example)
        return blob, FORMATS["torchscript"].load(blob, lambda: model)
    if format == "pt2":
        blob = _pt2(model, example)
        return blob, FORMATS["pt2"].load(blob, lambda: model)
    blob = _onnx(model, example, names)
    import onnxruntime

    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])

    def run(*args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        feeds = dict(zip(names, args)) if args else kwargs
        return torch.from_numpy(session.run(None, {name: t.numpy() for name, t in feeds.items()})[0])

    return blob, run


def _parity(eager: nn.Module, exported: Any, call: Call, *, what: str, data: str) -> Parity:
    args, kwargs = call
    with torch.no_grad():
        expected = eager.eval()(*args, **kwargs)
        if not isinstance(expected, torch.Tensor):
            raise ConfigError(f"{what}: the model returns {type(expected).__name__}; exports need one output tensor")
        found = torch.as_tensor(exported(*args, **kwargs))
    return compare_outputs(found, expected, what=what, rows=len((args or tuple(kwargs.values()))[0]), data=data)


def _spec(preprocessor: dict[str, Any], model_spec: dict[str, Any], format: str, file_name: str,
          output: torch.Tensor, parity: Parity, task: str | None) -> dict[str, Any]:
    return {
        "format": format, "file": file_name, "task": task, "call": preprocessor["call"],
        "inputs": [{**s, "shape": ["batch", *s["shape"][1:]]} for s in preprocessor["inputs"]],
        "output": {"name": OUTPUT_NAME, "dtype": str(output.dtype).removeprefix("torch."),
                   "shape": ["batch", *output.shape[1:]], "meaning": "the model's raw output (e.g. logits)"},
        "model": model_spec,
        "parity": {"rows": parity.rows, "data": parity.data, "max_abs_diff": parity.max_abs_diff,
                   "tolerance": parity.tolerance},
        "versions": versions(),
    }


def _readme(spec: dict[str, Any]) -> str:
    names = [s["name"] for s in spec["inputs"]]
    module, _, name = spec["model"]["import"].partition(":")
    call = names[0] if spec["call"] == "positional" else ", ".join(f"{n}={n}" for n in names)
    loading = LOADING[spec["format"]].format(module=module, name=name, file=spec["file"], call=call,
                                             feeds=", ".join(f'"{n}": {n}' for n in names))
    lines = [f"{spec['file']}: {spec['model']['import']} exported as {spec['format']} by torchkeep.", "",
             "Inputs (the tensors it was trained on; batch is dynamic):"]
    lines += [f"  {s['name']}  {s['dtype']} [{', '.join(map(str, s['shape']))}]" for s in spec["inputs"]]
    output = spec["output"]
    lines += [f"Output: {output['name']}  {output['dtype']} [{', '.join(map(str, output['shape']))}], {output['meaning']}",
              "", "From Python (torch tensors; numpy arrays for onnxruntime):", "",
              *("  " + line for line in loading.splitlines()), "",
              (f"Checked when exported: max abs diff {spec['parity']['max_abs_diff']:.3g} against the eager model on"
               f" {spec['parity']['rows']} rows of {spec['parity']['data']} (tolerance {spec['parity']['tolerance']:g})."),
              ""]
    return "\n".join(lines)


def export_module(model: nn.Module, preprocessor: dict[str, Any], model_spec: dict[str, Any], *, format: str,
                  out: str, data: str | None = None, task: str | None = None,
                  metrics: dict[str, float] | None = None) -> ExportResult:
    """Export an own model held in memory (`preprocessor`: the bundle's "tensors" preprocessor)."""
    if format not in FORMAT_NAMES:
        raise ConfigError(f"unknown export format {format!r} (expected one of: {', '.join(FORMAT_NAMES)})")
    model = model.cpu().eval()
    rows = _inputs(preprocessor, PARITY_ROWS, data)
    source = data or "generated inputs"
    if format == "bundle":
        storage = open_storage(out)
        write_bundle(storage, model=model, architecture=ARCHITECTURE, model_args=model_spec, schema=None,
                     preprocessor=preprocessor, task=task, metrics=metrics or {})
        reloaded, _, _ = read_bundle(storage)
        parity = _parity(model, reloaded, rows, what=f"bundle {out}", data=source)
        files = {key: len(storage.read(key)) for key in ("bundle.json", "model.safetensors", "MANIFEST.json")}
        return ExportResult(format=format, path=out, parity=parity, files=files)
    directory, file_name = target_paths(out, FORMATS[format])
    names = [s["name"] for s in preprocessor["inputs"]]
    try:
        blob, runner = _serialize(format, model, _head(rows, EXAMPLE_ROWS), names)
    except TorchkeepError:
        raise
    except Exception as error:  # torch's exporters on a user's model: one line naming the cause
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{format} export of {model_spec['import']} failed: {type(error).__name__}: {message}") from error
    parity = _parity(model, runner, rows, what=f"{format} export", data=source)
    with torch.no_grad():
        output = model(*rows[0], **rows[1])
    spec = _spec(preprocessor, model_spec, format, file_name, output, parity, task)
    files = {file_name: blob, "inputs.json": json.dumps(spec, indent=1).encode(), "README.txt": _readme(spec).encode()}
    storage = open_storage(directory)
    for name, content in files.items():
        storage.write(name, content)
    path = f"{directory}/{file_name}" if directory != "." else file_name
    return ExportResult(format=format, path=path, parity=parity, files={k: len(v) for k, v in files.items()})


def export_own(predictor: Any, *, format: str, out: str, data: str | None = None) -> ExportResult:
    """`export()` for a TensorPredictor (a loaded run or bundle of torchkeep.fit)."""
    meta = predictor.meta
    return export_module(predictor.model, meta["preprocessor"], meta["model_args"], format=format, out=out, data=data,
                         task=meta.get("task"), metrics=meta.get("metrics"))
