"""`export(source, format=..., out=...)`: a run or bundle to a bundle or a class-free format, parity-checked.

The bundle is a directory (or s3:// prefix). A class-free format is one file, named by `out` when
`out` ends with the format's suffix (`model.onnx`), else `out/model.<suffix>`; schema.json,
inputs.json and README.txt go next to it. The file is written only after its bytes pass the
parity check, so a failed export leaves nothing behind that looks usable.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from torchkeep.bundle import read_bundle, write_bundle
from torchkeep.errors import CheckpointError, ConfigError, StorageError
from torchkeep.export.describe import inputs_spec, readme
from torchkeep.export.formats import FORMATS, input_names
from torchkeep.export.images import export_image_model
from torchkeep.export.own_model import export_own
from torchkeep.export.parity import check_parity, parity_data, parity_inputs
from torchkeep.export.result import FORMAT_NAMES, ExportResult, target_paths
from torchkeep.models.build import build_model
from torchkeep.predict.load import load
from torchkeep.predict.own_model import TensorPredictor
from torchkeep.storage import open_storage

__all__ = ["FORMAT_NAMES", "ExportResult", "export", "target_paths"]

EXAMPLE_ROWS = 8


def _model_spec(source: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(architecture, constructor args): from the bundle, or from the run's model.json."""
    if "model_args" in meta:
        return meta["architecture"], meta["model_args"]
    try:
        spec = json.loads(open_storage(source).read("model.json"))
        return spec["architecture"], spec["args"]
    except (StorageError, ValueError, KeyError) as error:
        raise CheckpointError(f"{source}: no readable model.json ({error})") from None


def _examples(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A few real rows to trace with; at least 2, so that the batch size is not specialized to 1."""
    examples = tuple(inputs[name][:EXAMPLE_ROWS] for name in input_names(inputs))
    if len(examples[0]) < 2:
        examples = tuple(torch.cat([t, t]) for t in examples)
    return examples


def export(source: str, *, format: str, out: str, data: str | None = None) -> ExportResult:
    """Export the model of a run or bundle (local or s3://) to `out`, after a parity check on real rows."""
    if format not in FORMAT_NAMES:
        raise ConfigError(f"unknown export format {format!r} (expected one of: {', '.join(FORMAT_NAMES)})")
    predictor = load(source)
    if isinstance(predictor, TensorPredictor):  # a user's own model (torchkeep.fit): tensors in, tensors out
        return export_own(predictor, format=format, out=out, data=data)
    model, schema = predictor.model.cpu().eval(), predictor.schema
    if predictor.kind == "image":  # one `image` input, parity on real images
        architecture, model_args = _model_spec(source, predictor.meta)
        return export_image_model(source, model=model, schema=schema, architecture=architecture, model_args=model_args,
                                  metrics=predictor.meta.get("metrics") or {}, format=format, out=out, data=data)
    architecture, model_args = _model_spec(source, predictor.meta)
    rows_from = parity_data(source, data)
    inputs = parity_inputs(schema, rows_from)
    if format == "bundle":
        storage = open_storage(out)
        write_bundle(storage, model=model, architecture=architecture, model_args=model_args, schema=schema,
                     metrics=predictor.meta.get("metrics") or {})
        reloaded, _, _ = read_bundle(storage)  # what was written, read back through its manifest
        parity = check_parity(model, reloaded, inputs, what=f"bundle {out}", data=rows_from)
        files = {key: len(storage.read(key)) for key in ("bundle.json", "model.safetensors", "MANIFEST.json")}
        return ExportResult(format=format, path=out, parity=parity, files=files)
    export_format = FORMATS[format]
    directory, file_name = target_paths(out, export_format)
    blob = export_format.serialize(model, _examples(inputs))
    runner = export_format.load(blob, lambda: build_model(architecture, model_args))
    parity = check_parity(model, runner, inputs, what=f"{format} export", data=rows_from)
    spec = inputs_spec(schema, export_format=export_format, file_name=file_name, architecture=architecture,
                       model_args=model_args, parity=parity)
    files = {
        file_name: blob,
        "schema.json": schema.to_json().encode(),
        "inputs.json": json.dumps(spec, indent=1, default=str).encode(),
        "README.txt": readme(spec, export_format).encode(),
    }
    storage = open_storage(directory)
    for name, content in files.items():
        storage.write(name, content)
    path = f"{directory}/{file_name}" if directory != "." else file_name
    return ExportResult(format=format, path=path, parity=parity, files={k: len(v) for k, v in files.items()})
