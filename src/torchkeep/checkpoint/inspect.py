"""What is inside a checkpoint, run, bundle, `.pth` / `.pt` or `.safetensors`, without running any of it.

`inspect(uri)` returns one JSON-ready report: the kind of thing found, every file with its size and
whether it matches the manifest that commits it, every tensor (name, dtype, shape), the parameter
count of the model weights, and the torchkeep metadata (step, epoch, metrics, task, versions).
Pickles are read only with `torch.load(weights_only=True)` (checkpoint/torchfile.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from torchkeep.checkpoint import format as checkpoint_format
from torchkeep.checkpoint import shards, tensors as tensor_files
from torchkeep.checkpoint.convert import MODEL_KEY, OPTIMIZER_KEY, is_state_dict
from torchkeep.checkpoint.torchfile import PICKLE_SUFFIXES, load_weights_only, read_file, split_uri
from torchkeep.errors import CheckpointError, DataError, StorageError
from torchkeep.storage import Storage, open_storage

MANIFEST = "MANIFEST.json"
WEIGHTS = "model.safetensors"


def inspect(uri: str) -> dict[str, Any]:
    """A report on `uri` (local path or s3://). `valid` is False when a file does not match its manifest."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    if name.endswith(".safetensors"):
        return _safetensors_file(uri)
    if name.endswith(PICKLE_SUFFIXES):
        return _pickle_file(uri)
    if "://" not in uri and not Path(uri).exists():
        raise DataError(f"{uri}: no such file or directory")
    if "://" not in uri and Path(uri).is_file():
        raise DataError(f"{uri}: not a file inspect reads (expected .pth, .pt, .safetensors, or a checkpoint,"
                        " run or bundle directory)")
    storage = open_storage(uri)
    if storage.exists("bundle.json"):
        return {"path": uri, **_bundle(storage, "")}
    if storage.exists("state.json") or storage.exists(MANIFEST) or checkpoint_format.step_of(name) is not None:
        return {"path": uri, **_checkpoint(storage, name, uri)}
    if storage.exists("config.json") or storage.exists("run.json") or storage.list(checkpoint_format.PREFIX):
        return _run(storage, uri)
    raise CheckpointError(f"{uri}: not a torchkeep checkpoint, run or bundle (and not a .pth, .pt or .safetensors file)")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _natural(name: str) -> list[Any]:
    """`mlp.2.weight` before `mlp.10.weight`: digits compare as numbers."""
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def describe_tensors(tensors: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    return [{"name": name, "dtype": dtype_name(t.dtype), "shape": list(t.shape), "numel": t.numel(),
             "bytes": t.numel() * t.element_size()} for name, t in sorted(tensors.items(), key=lambda i: _natural(i[0]))]


def _files(storage: Storage, prefix: str, manifest: dict[str, Any] | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Every file under `prefix` with its manifest status, tensors of safetensors files; and the problems."""
    base = f"{prefix}/" if prefix else ""
    listed = (manifest or {}).get("files", {})
    present = sorted({key[len(base):].split("/", 1)[0] for key in storage.list(prefix)} - {MANIFEST} | set(listed))
    files, problems = [], []
    for name in present:
        entry: dict[str, Any] = {"name": name}
        try:
            data = storage.read(f"{base}{name}")
        except StorageError:
            entry["manifest"] = "missing"
            problems.append(f"{name}: listed in the manifest but missing")
            files.append(entry)
            continue
        entry["size_bytes"] = len(data)
        if manifest is not None:
            expected = listed.get(name)
            if expected is None:
                entry["manifest"] = "not listed"
            elif len(data) != expected.get("size") or hashlib.sha256(data).hexdigest() != expected.get("sha256"):
                entry["manifest"] = "mismatch"
                problems.append(f"{name}: {len(data)} bytes, sha256 does not match the manifest (truncated or altered)")
            else:
                entry["manifest"] = "ok"
        if name.endswith(".safetensors"):
            try:
                entry["tensors"] = describe_tensors(tensor_files.decode(data, name))
            except CheckpointError as error:
                problems.append(str(error))
        files.append(entry)
    return files, problems


def _read_manifest(storage: Storage, prefix: str) -> tuple[dict[str, Any] | None, str | None]:
    key = f"{prefix}/{MANIFEST}" if prefix else MANIFEST
    if not storage.exists(key):
        return None, f"no {MANIFEST}: incomplete, so it does not exist as a checkpoint or bundle"
    try:
        manifest = json.loads(storage.read(key))
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no 'files' object")
        return manifest, None
    except (ValueError, AttributeError) as error:
        return None, f"{MANIFEST} unreadable ({error})"


def _parameter_count(files: list[dict[str, Any]]) -> int | None:
    weights = next((f for f in files if f["name"] == WEIGHTS and "tensors" in f), None)
    return sum(t["numel"] for t in weights["tensors"]) if weights else None


def _json_file(storage: Storage, key: str) -> Any:
    try:
        return json.loads(storage.read(key))
    except (StorageError, ValueError):
        return None


def _bundle(storage: Storage, prefix: str) -> dict[str, Any]:
    base = f"{prefix}/" if prefix else ""
    manifest, problem = _read_manifest(storage, prefix)
    files, problems = _files(storage, prefix, manifest)
    meta = _json_file(storage, f"{base}bundle.json") or {}
    schema = (meta.get("preprocessor") or {}).get("schema") or {}
    target = schema.get("target") or {}
    metadata = {key: meta.get(key) for key in ("format", "bundle_version", "architecture", "task", "metrics", "versions")}
    metadata.update(target=target.get("name"), labels=target.get("labels") or None,
                    categorical=[c["name"] for c in schema.get("categorical", [])],
                    continuous=[c["name"] for c in schema.get("continuous", [])], model_args=meta.get("model_args"))
    if schema.get("notes"):  # what fitting dropped or re-read (column hygiene)
        metadata["notes"] = schema["notes"]
    return _report("bundle", files, ([problem] if problem else []) + problems, metadata, manifest is not None)


def _report(kind: str, files: list[dict[str, Any]], problems: list[str], metadata: dict[str, Any],
            has_manifest: bool | None) -> dict[str, Any]:
    return {
        "kind": kind,
        "valid": None if has_manifest is None else (has_manifest and not problems),
        "problems": problems,
        "size_bytes": sum(f.get("size_bytes", 0) for f in files),
        "parameter_count": _parameter_count(files),
        "metadata": metadata,
        "files": files,
    }


def _summarize_optimizer(state: Any) -> dict[str, Any] | None:
    """Hyper-parameters and size of an optimizer state_dict (or its codec JSON form)."""
    if not isinstance(state, dict) or "param_groups" not in state:
        return None
    groups = state["param_groups"]
    entries = state.get("state", {})
    count = len(entries.get("__items__", [])) if isinstance(entries, dict) and "__items__" in entries else len(entries)
    hyper = {k: v for k, v in (groups[0] if groups else {}).items() if k != "params" and isinstance(v, (int, float, str, bool))}
    return {"param_groups": len(groups), "parameters_with_state": count, "hyperparameters": hyper}


def _checkpoint(storage: Storage, name: str, uri: str) -> dict[str, Any]:
    manifest, problem = _read_manifest(storage, "")
    files, problems = _files(storage, "", manifest)
    state = _json_file(storage, "state.json") or {}
    metadata: dict[str, Any] = {key: state.get(key) for key in ("step", "epoch", "metrics")}
    metadata.update(
        created_at=(manifest or {}).get("created_at"), schema_version=(manifest or {}).get("schema_version"),
        extra=_without_tensor_refs(state.get("extra")), optimizer=_summarize_optimizer(state.get("optimizer")),
        holds=[part for part in ("optimizer", "scheduler", "loader", "rng") if state.get(part) is not None],
    )
    whole = _sharded_tensors(storage, manifest or {}, files, metadata)
    run = uri.rstrip("/").rsplit("/", 2)
    if len(run) == 3 and run[1] == checkpoint_format.PREFIX:  # inside a run: its task comes from the schema
        schema = _json_file(open_storage(run[0]), "schema.json") or {}
        metadata["task"] = (schema.get("target") or {}).get("task")
    report = _report("checkpoint", files, ([problem] if problem else []) + problems, metadata, manifest is not None)
    if whole is not None:
        report["parameter_count"] = sum(t["numel"] for t in whole if t["name"].startswith(shards.MODEL_PREFIX))
    return report


def _sharded_tensors(storage: Storage, manifest: dict[str, Any], files: list[dict[str, Any]],
                     metadata: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Of a sharded checkpoint: the whole tensors its shards hold, listed under shards.json (each shard
    file lists its own chunks, `NAME@OFFSETS`); None for a plain checkpoint."""
    layout = _json_file(storage, shards.SHARDS_FILE) if shards.is_sharded(manifest) else None
    if not isinstance(layout, dict) or "tensors" not in layout:
        return None
    metadata.update(layout=shards.LAYOUT, world_size=manifest.get("world_size"))
    whole = []
    for name, entry in sorted(layout["tensors"].items(), key=lambda item: _natural(item[0])):
        dtype = tensor_files.FROM_NAME.get(entry.get("dtype"), torch.uint8)
        numel = int(torch.Size(entry.get("size", [])).numel())
        whole.append({"name": name, "dtype": dtype_name(dtype), "shape": entry.get("size"), "numel": numel,
                      "bytes": numel * dtype.itemsize})
    for file in files:
        if file["name"] == shards.SHARDS_FILE:
            file["tensors"] = whole
    return whole


def _without_tensor_refs(value: Any) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return "<tensor>"
        return {k: _without_tensor_refs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_tensor_refs(v) for v in value]
    return value


def _run(storage: Storage, uri: str) -> dict[str, Any]:
    run = _json_file(storage, "run.json") or {}
    checkpoints = [asdict(info) for info in checkpoint_format.list_checkpoints(storage, verify=True)]
    latest = storage.read(f"{checkpoint_format.PREFIX}/{checkpoint_format.LATEST}").decode() \
        if storage.exists(f"{checkpoint_format.PREFIX}/{checkpoint_format.LATEST}") else None
    bundle = _bundle(storage, "bundle") if storage.exists("bundle/bundle.json") else None
    problems = [f"{c['name']}: {c['reason']}" for c in checkpoints if c["status"] == "corrupt"]
    problems += [f"bundle: {p}" for p in (bundle or {}).get("problems", [])]
    model = _json_file(storage, "model.json") or {}
    schema = _json_file(storage, "schema.json") or {}
    metadata = {"status": run.get("status"), "valid_metrics": run.get("valid"), "architecture": model.get("architecture"),
                "task": (schema.get("target") or {}).get("task"), "latest": latest}
    if schema.get("notes"):
        metadata["notes"] = [f"{n['column']}: {n['action']} ({n['reason']})" for n in schema["notes"]]
    return {
        "path": uri, "kind": "run", "valid": not problems, "problems": problems,
        "size_bytes": sum(c["size_bytes"] for c in checkpoints) + (bundle or {}).get("size_bytes", 0),
        "parameter_count": (bundle or {}).get("parameter_count"), "metadata": metadata,
        "checkpoints": checkpoints, "bundle": bundle,
    }


def _safetensors_file(uri: str) -> dict[str, Any]:
    data = read_file(uri)
    tensors = tensor_files.decode(data, uri)
    (length,) = struct.unpack_from("<Q", data)  # the header is valid: decode has read it
    header_meta = json.loads(bytes(data[8 : 8 + length])).get("__metadata__")
    parent, name = split_uri(uri)
    file = {"name": name, "size_bytes": len(data), "tensors": describe_tensors(tensors)}
    # A file inside a checkpoint or bundle is checked against the manifest next to it.
    manifest = _json_file(open_storage(parent), MANIFEST)
    expected = ((manifest or {}).get("files") or {}).get(name)
    problems = []
    if expected is not None:
        ok = len(data) == expected.get("size") and hashlib.sha256(data).hexdigest() == expected.get("sha256")
        file["manifest"] = "ok" if ok else "mismatch"
        if not ok:
            problems.append(f"{name}: does not match {parent}/{MANIFEST} (truncated or altered)")
    report = _report("safetensors", [file], problems, {"header_metadata": header_meta}, None if expected is None else True)
    # torchkeep's own state.safetensors holds optimizer state and RNG, not parameters.
    report["parameter_count"] = None if name == "state.safetensors" else sum(t.numel() for t in tensors.values())
    return {"path": uri, **report}


def _walk(obj: Any, path: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out[path or "(the file is one tensor)"] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _walk(value, f"{path}.{key}" if path else str(key), out)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _walk(value, f"{path}.{i}" if path else str(i), out)


def _scalars(obj: dict[str, Any]) -> dict[str, Any]:
    """Top-level entries that are not tensor collections: epoch, loss and the like."""
    out = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            out[str(key)] = value.detach().item()
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[str(key)] = value
    return out


def _pickle_file(uri: str) -> dict[str, Any]:
    data = read_file(uri)
    obj = load_weights_only(uri, data)
    tensors: dict[str, torch.Tensor] = {}
    _walk(obj, "", tensors)
    if is_state_dict(obj):
        layout, model = "state_dict", obj
        metadata: dict[str, Any] = {"layout": layout}
    elif isinstance(obj, dict) and is_state_dict(obj.get(MODEL_KEY)):
        model = obj[MODEL_KEY]
        metadata = {"layout": "checkpoint dict", "keys": [str(k) for k in obj], **_scalars(obj),
                    "optimizer": _summarize_optimizer(obj.get(OPTIMIZER_KEY))}
    else:
        model = tensors
        metadata = {"layout": type(obj).__name__, "keys": [str(k) for k in obj] if isinstance(obj, dict) else None}
    file = {"name": split_uri(uri)[1], "size_bytes": len(data), "tensors": describe_tensors(tensors)}
    report = _report("pickle", [file], [], metadata, None)
    report["parameter_count"] = sum(t.numel() for t in model.values())
    return {"path": uri, **report}
