"""Export of image models: bundle, state-dict, TorchScript, torch.export (pt2) or ONNX.

The class-free formats take one input, `image`: uint8 (or float 0-255) pixels [N, C, H, W] at the
size in schema.json, with N dynamic; normalization is inside the model. Every export is checked
against the eager model on real images (the run's own, or `--data`) before it is written.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import torch
from torch import nn

from torchkeep.bundle import read_bundle, versions, write_bundle
from torchkeep.data.builtin import get_example
from torchkeep.data.image_io import decode_all, is_idx_folder, list_images, read_images, resize_arrays
from torchkeep.data.images import ImageSchema
from torchkeep.errors import DataError, StorageError
from torchkeep.export.describe import output_spec
from torchkeep.export.formats import FORMATS, quiet_onnx_export
from torchkeep.export.parity import Parity, compare_outputs
from torchkeep.export.result import ExportResult, target_paths
from torchkeep.models.build import build_model
from torchkeep.storage import open_storage

# Convolutions sum in a different order in each runtime: differences of ~1e-5 on logits are normal.
IMAGE_TOLERANCE = 1e-4
PARITY_IMAGES = 256
LOADING = {
    "state-dict": 'model = SmallCNN(**json.load(open("inputs.json"))["model"]["args"])  # torchkeep.models.vision\n'
                  'model.load_state_dict(torch.load("{file}", weights_only=True)); model.eval()',
    "torchscript": 'model = torch.jit.load("{file}")',
    "pt2": 'model = torch.export.load("{file}").module()',
    "onnx": 'session = onnxruntime.InferenceSession("{file}")\noutput = session.run(None, {{"image": pixels}})[0]',
}


def parity_images(source: str, schema: ImageSchema, data: str | None) -> tuple[torch.Tensor, str]:
    """Up to PARITY_IMAGES real images at the schema's size: from `data`, else the run's training data."""
    settings: dict[str, Any] = {}
    if data is None:
        stripped = source.rstrip("/")
        for run_dir in (stripped, stripped.rpartition("/")[0] or "."):
            try:
                settings = json.loads(open_storage(run_dir).read("config.json"))["data"]
                break
            except (StorageError, ValueError, KeyError):
                continue
        data = settings.get("path")
        if data is None and settings.get("example"):
            with np.load(get_example(settings["example"]).path) as arrays:
                pixels = resize_arrays(arrays["images"][:PARITY_IMAGES, None], schema.size, schema.channels)
            return torch.from_numpy(pixels), settings["example"]
        if data is None:
            raise DataError(f"{source}: the parity check needs real images; pass --data (a folder, CSV or idx folder)")
    image_dir = settings.get("image_dir")
    if image_dir is None and is_idx_folder(data):
        pixels = read_images(data, size=schema.size, channels=schema.channels, need_labels=False).images
    else:
        root, files, _ = list_images(data, image_dir=image_dir, need_labels=False)
        storage = open_storage(root)
        pixels = decode_all(lambda key: storage.read(key), files[:PARITY_IMAGES], size=schema.size,
                            channels=schema.channels, skip_bad=True)[0]
    return torch.from_numpy(np.ascontiguousarray(pixels[:PARITY_IMAGES])), data


def _pt2_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    program = torch.export.export(model, (example,), dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}})
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def _onnx_bytes(model: nn.Module, example: torch.Tensor) -> bytes:
    with quiet_onnx_export():
        program = torch.onnx.export(model, (example,), None, input_names=["image"], output_names=["output"],
                                    dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1)}},
                                    dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


def _runner(export_format: str, blob: bytes, rebuild: Any) -> Any:
    if export_format == "pt2":
        return torch.export.load(io.BytesIO(blob)).module()
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
        return lambda image: torch.from_numpy(session.run(None, {"image": image.numpy()})[0])
    return FORMATS[export_format].load(blob, rebuild)  # state-dict, torchscript: input-agnostic


def _parity(eager: nn.Module, run: Any, images: torch.Tensor, what: str, data: str) -> Parity:
    with torch.no_grad():
        expected = eager.eval()(images)
        found = torch.as_tensor(run(images))
    return compare_outputs(found, expected, what=what, rows=len(images), data=data, tolerance=IMAGE_TOLERANCE,
                           unit="images")


def export_image_model(source: str, *, model: nn.Module, schema: ImageSchema, architecture: str,
                       model_args: dict[str, Any], metrics: dict[str, float], format: str, out: str,
                       data: str | None) -> ExportResult:
    images, data_name = parity_images(source, schema, data)
    if format == "bundle":
        storage = open_storage(out)
        write_bundle(storage, model=model, architecture=architecture, model_args=model_args, schema=schema, metrics=metrics)
        parity = _parity(model, read_bundle(storage)[0], images, f"bundle {out}", data_name)
        files = {key: len(storage.read(key)) for key in ("bundle.json", "model.safetensors", "MANIFEST.json")}
        return ExportResult(format=format, path=out, parity=parity, files=files)
    export_format = FORMATS[format]
    directory, file_name = target_paths(out, export_format)
    example = images[:8] if len(images) >= 2 else images.repeat(2, 1, 1, 1)  # a batch of 1 would specialize
    serialize = {"pt2": _pt2_bytes, "onnx": _onnx_bytes}.get(format)
    blob = serialize(model, example) if serialize else export_format.serialize(model, (example,))
    parity = _parity(model, _runner(format, blob, lambda: build_model(architecture, model_args)), images,
                     f"{format} export", data_name)
    spec = {"format": format, "file": file_name, "versions": versions(),
            "inputs": {"image": {"dtype": "uint8 (or float32 pixel values 0-255)",
                                 "shape": ["batch", schema.channels, schema.height, schema.width],
                                 "encoding": "decode the image, apply its EXIF orientation, convert to "
                                             + ("gray (L)" if schema.channels == 1 else "RGB")
                                             + f", resize to {schema.height}x{schema.width} (bilinear); normalization"
                                             " is inside the model"}},
            "output": output_spec(schema), "labels": schema.target.labels if schema.target else None,
            "model": {"architecture": architecture, "args": model_args}, "parity": parity.__dict__}
    readme = (f"{file_name}: a torchkeep image model ({architecture}), exported as {format}.\n\n"
              f"Input `image`: {json.dumps(spec['inputs']['image'])}\nOutput: {spec['output']['meaning']}\n\n"
              f"Loading from Python:\n{LOADING[format].format(file=file_name)}\n\n{parity.describe()}\n")
    files = {file_name: blob, "schema.json": json.dumps(schema.to_dict(), indent=1).encode(),
             "inputs.json": json.dumps(spec, indent=1, default=str).encode(), "README.txt": readme.encode()}
    storage = open_storage(directory)
    for name, content in files.items():
        storage.write(name, content)
    path = f"{directory}/{file_name}" if directory != "." else file_name
    return ExportResult(format=format, path=path, parity=parity, files={k: len(v) for k, v in files.items()})
