"""The bundle: everything `predict` (and serving) needs, and nothing else.

    bundle.json        architecture + constructor args, preprocessor (TableSchema), task, metrics, versions
    model.safetensors  weights
    MANIFEST.json      sizes and sha256 of both, written last

It loads without the run that made it and without unpickling; the config names the architecture,
so renaming or moving a model class in user code never breaks it. A user's own model trained with
`torchkeep.fit` is the exception: its bundle names the class by import path (architecture "python",
models/imported.py), and loading it imports that module.
"""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import polars as pl
import torch
from torch import nn

from torchkeep.checkpoint import tensors as tensor_files
from torchkeep.data.images import ImageSchema
from torchkeep.data.table import TableSchema
from torchkeep.errors import CheckpointError, StorageError
from torchkeep.models.build import build_model
from torchkeep.storage import Storage
from torchkeep.version import __version__

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
MANIFEST = "MANIFEST.json"
BUNDLE_VERSION = 1


def versions() -> dict[str, str]:
    return {"torchkeep": __version__, "torch": torch.__version__, "polars": pl.__version__,
            "python": platform.python_version()}


def write_bundle(storage: Storage, *, model: nn.Module, architecture: str, model_args: dict[str, Any],
                 schema: TableSchema | None, metrics: dict[str, float], prefix: str = "",
                 preprocessor: dict[str, Any] | None = None, task: str | None = None) -> None:
    """`preprocessor` replaces the table one for a model without a TableSchema (`schema=None`): for a
    user's own model, `{"kind": "tensors", ...}` describes the tensors it takes (see run/own_model.py)."""
    base = f"{prefix}/" if prefix else ""
    assert (schema is None) != (preprocessor is None), "a bundle has one preprocessor"
    meta = {
        "format": "torchkeep.bundle",
        "bundle_version": BUNDLE_VERSION,
        "architecture": architecture,
        "model_args": model_args,
        "preprocessor": preprocessor or {"kind": getattr(schema, "kind", "table"), "schema": schema.to_dict()},  # type: ignore[union-attr]
        "task": task if schema is None else schema.target.task if schema.target else None,
        "metrics": metrics,
        "versions": versions(),
    }
    files = {
        WEIGHTS_FILE: tensor_files.to_bytes({k: v.detach().cpu() for k, v in model.state_dict().items()}),
        BUNDLE_FILE: json.dumps(meta, indent=1).encode(),
    }
    storage.delete(f"{base}{MANIFEST}")  # an overwritten bundle is invalid until its new manifest lands
    for name, data in files.items():
        storage.write(f"{base}{name}", data)
    manifest = {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in files.items()}
    storage.write(f"{base}{MANIFEST}", json.dumps({"files": manifest}, indent=1).encode())


def schema_from_dict(data: dict[str, Any], kind: str = "table") -> Any:
    """The preprocessor saved in a bundle or run: a TableSchema, or an ImageSchema for image runs."""
    if kind == "image" or data.get("kind") == "image":
        return ImageSchema.from_dict(data)
    return TableSchema.from_dict(data)


def read_bundle(storage: Storage, prefix: str = "") -> tuple[nn.Module, Any, dict[str, Any]]:
    """(model in eval mode, schema, bundle.json contents), every file checked against the manifest.
    The schema is a TableSchema or ImageSchema; None for a bundle of tensors in, tensors out (a user's own model)."""
    base = f"{prefix}/" if prefix else ""
    where = f"{storage.uri}/{prefix}".rstrip("/")
    try:
        manifest = json.loads(storage.read(f"{base}{MANIFEST}"))["files"]
    except (StorageError, ValueError, KeyError) as error:
        raise CheckpointError(f"{where}: not a complete bundle (no valid {MANIFEST})") from error
    files = {}
    for name in (BUNDLE_FILE, WEIGHTS_FILE):
        data = storage.read(f"{base}{name}")
        entry = manifest.get(name, {})
        if len(data) != entry.get("size") or hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise CheckpointError(f"{where}/{name}: does not match the bundle manifest (truncated or altered)")
        files[name] = data
    meta = json.loads(files[BUNDLE_FILE])
    if meta.get("bundle_version") != BUNDLE_VERSION:
        raise CheckpointError(f"{where}: bundle_version {meta.get('bundle_version')!r}, expected {BUNDLE_VERSION}")
    kind = meta["preprocessor"].get("kind", "table")
    schema = schema_from_dict(meta["preprocessor"]["schema"], kind) if kind in ("table", "image") else None
    model = build_model(meta["architecture"], meta["model_args"])
    try:
        model.load_state_dict(tensor_files.decode(files[WEIGHTS_FILE], f"{where}/{WEIGHTS_FILE}"))
    except RuntimeError as error:  # a user's class that changed since training: one line, not torch's essay
        raise CheckpointError(f"{where}: the weights do not fit the model class any more:"
                              f" {' '.join(line.strip() for line in str(error).splitlines()[:2])}") from None
    model.eval()
    return model, schema, meta
