"""Files of tensors for a model trained with `torchkeep.fit`: what `torchkeep predict` and `evaluate` read
and write for it (local paths or s3://).

Inputs (`--data`):
    .npy          one array: the input of a `model(input)` model, or of a model with one named input
    .npz          named arrays (`np.savez`), read with allow_pickle=False
    .safetensors  named tensors
A `model(input)` model takes the array named "input", else the one array not named "target"; a
`model(**inputs)` model takes one array per input name (other arrays are ignored). `evaluate` also
needs an array named "target". Each input must have the dtype kind (float / integer / bool) and the
row shape of the training tensors; floats are cast to the trained float dtype, integers to the trained
integer dtype.

Outputs (`--out`, by suffix):
    .npy / .safetensors   the output tensor as the model returns it (safetensors: named "output")
    .csv / .parquet       a row per input row: `output` (one value per row) or `output_0`, `output_1`, ...
                          (a row's values flattened in order), then, where the run recorded a task, the
                          same `prediction` / `probability_<class index>` columns as a table run
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeep.data.inputs import INPUT, TARGET
from torchkeep.errors import DataError, StorageError
from torchkeep.storage import open_storage

INPUT_SUFFIXES = (".npy", ".npz", ".safetensors")
OUTPUT_SUFFIXES = (".npy", ".safetensors", ".csv", ".parquet")


def _suffix(path: str) -> str:
    return Path(path.rpartition("/")[2]).suffix.lower()


def read_arrays(path: str) -> dict[str, torch.Tensor]:
    """The tensors in a .npy (named "input"), .npz or .safetensors file; errors name the file."""
    suffix = _suffix(path)
    if suffix not in INPUT_SUFFIXES:
        raise DataError(f"{path}: a model trained with torchkeep.fit reads tensors from .npy, .npz or .safetensors"
                        f" (got '{suffix or '(none)'}')")
    parent, _, name = path.rpartition("/")
    try:
        data = open_storage(parent or ".").read(name)
    except StorageError as error:
        raise DataError(str(error)) from None
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load

            return load(bytes(data))
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = {INPUT: loaded} if suffix == ".npy" else {key: loaded[key] for key in loaded.files}
    except Exception as error:  # noqa: BLE001 (numpy and safetensors raise many kinds on a damaged file)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"{path}: cannot read as {suffix[1:]}: {first}") from None
    tensors = {}
    for key, array in arrays.items():
        try:
            tensors[key] = torch.from_numpy(np.ascontiguousarray(array))
        except TypeError:
            raise DataError(f"{path}: array '{key}' is {array.dtype}, not numbers a model can take") from None
    return tensors


def _shape(dims: list[Any]) -> str:
    return "[" + ", ".join("N" if size is None else str(size) for size in dims) + "]"


def _checked(tensor: torch.Tensor, spec: dict[str, Any], path: str, key: str) -> torch.Tensor:
    """`tensor` as input `spec` (same dtype kind and row shape), cast to its dtype; else one line naming the file."""
    dtype = getattr(torch, spec["dtype"])
    kind = "bool" if dtype == torch.bool else "float" if dtype.is_floating_point else "integer"
    found = "bool" if tensor.dtype == torch.bool else "float" if tensor.is_floating_point() else \
        "complex" if tensor.is_complex() else "integer"
    if found != kind or list(tensor.shape[1:]) != list(spec["shape"][1:]) or tensor.ndim != len(spec["shape"]):
        name = "the array" if _suffix(path) == ".npy" else f"array '{key}'" if key == spec["name"] else \
            f"array '{key}' (input '{spec['name']}')"
        raise DataError(f"{path}: {name} should be {spec['dtype']} {_shape(spec['shape'])} (rows of the training"
                        f" tensors), got {str(tensor.dtype).removeprefix('torch.')} {_shape(list(tensor.shape))}")
    return tensor.to(dtype)


def read_inputs(path: str, preprocessor: dict[str, Any], *, with_target: bool = False) -> tuple[Any, torch.Tensor | None]:
    """(what TensorPredictor.predict takes, the target or None) from a file, checked against the training inputs."""
    specs = preprocessor["inputs"]
    if preprocessor["call"] == "other" or not specs:
        raise DataError(f"{path}: the model's training inputs were not one tensor or a dict of tensors, so there is"
                        " nothing to read a file into; call torchkeep.load(...).model yourself")
    arrays = read_arrays(path)
    names = [spec["name"] for spec in specs]
    target = None
    if with_target:
        if TARGET not in arrays:
            raise DataError(f"{path}: no array named 'target' (has: {', '.join(arrays) or 'none'}); evaluate needs the"
                            " inputs and a 'target' array (.npz or .safetensors)")
        target = arrays[TARGET]
    if preprocessor["call"] == "positional":
        candidates = [key for key in arrays if key != TARGET]
        key = INPUT if INPUT in arrays else candidates[0] if len(candidates) == 1 else None
        if key is None:
            raise DataError(f"{path}: the model takes one tensor: name its array 'input' (has: {', '.join(arrays) or 'none'})")
        inputs: Any = _checked(arrays[key], specs[0], path, key)
        rows = len(inputs)
    else:
        if _suffix(path) == ".npy" and len(names) == 1:  # one array for a model with one named input
            arrays = {names[0]: arrays[INPUT]}
        missing = [name for name in names if name not in arrays]
        if missing:
            raise DataError(f"{path}: no array named '{missing[0]}'; the model takes {', '.join(names)}"
                            f" (has: {', '.join(arrays) or 'none'}; a .npy file holds one array: use .npz or .safetensors)")
        inputs = {name: _checked(arrays[name], spec, path, name) for name, spec in zip(names, specs)}
        counts = {name: len(tensor) for name, tensor in inputs.items()}
        if len(set(counts.values())) > 1:
            raise DataError(f"{path}: the inputs have different numbers of rows ({counts})")
        rows = counts[names[0]]
    if rows == 0:
        raise DataError(f"{path}: no rows")
    if target is not None and len(target) != rows:
        raise DataError(f"{path}: 'target' has {len(target):,} rows and the inputs {rows:,}")
    return inputs, target


def decode_outputs(outputs: torch.Tensor, task: str | None) -> tuple[list[Any], torch.Tensor | None] | None:
    """(prediction per row, probabilities [rows, classes] or None) where the task says what the outputs
    mean and their shape fits it, as the named losses read them; None otherwise.
    multiclass: logits [N, C] -> class index and softmax; binary: one logit per row -> 0/1 (logit > 0)
    and [1 - p, p]; regression: one value per row -> that value."""
    if not isinstance(outputs, torch.Tensor) or outputs.ndim == 0 or not outputs.is_floating_point():
        return None
    per_row = outputs.reshape(len(outputs), -1).double()
    if task == "multiclass" and outputs.ndim == 2 and outputs.shape[1] >= 2:
        return outputs.argmax(dim=1).tolist(), torch.softmax(per_row, dim=1)
    if task == "binary" and per_row.shape[1] == 1:
        positive = torch.sigmoid(per_row[:, 0])
        return (per_row[:, 0] > 0).long().tolist(), torch.stack([1 - positive, positive], dim=1)
    if task == "regression" and per_row.shape[1] == 1:
        return outputs.reshape(-1).tolist(), None
    return None


def output_columns(outputs: torch.Tensor, task: str | None) -> dict[str, Any]:
    """The columns of a .csv / .parquet output file (see the module docstring)."""
    flat = outputs.reshape(len(outputs), -1)
    if outputs.ndim == 1:
        columns: dict[str, Any] = {"output": outputs.numpy()}
    else:
        index_names = ["_".join(map(str, index)) for index in np.ndindex(*outputs.shape[1:])]
        columns = {f"output_{name}": flat[:, i].numpy() for i, name in enumerate(index_names)}
    decoded = decode_outputs(outputs, task)
    if decoded is not None:
        predictions, probabilities = decoded
        columns["prediction"] = predictions
        if probabilities is not None:
            columns |= {f"probability_{i}": probabilities[:, i].numpy() for i in range(probabilities.shape[1])}
    return columns


def check_output_path(path: str) -> str:
    """The suffix of an output path, checked before any model runs."""
    suffix = _suffix(path)
    if suffix not in OUTPUT_SUFFIXES:
        raise DataError(f"{path}: unsupported output type '{suffix or '(none)'}' (expected .npy, .safetensors, .csv"
                        " or .parquet)")
    return suffix


def write_outputs(outputs: torch.Tensor, path: str, task: str | None) -> None:
    """Write the model's outputs to .npy, .safetensors, .csv or .parquet (by suffix), local or s3://."""
    suffix = check_output_path(path)
    if not isinstance(outputs, torch.Tensor) or outputs.ndim == 0:
        raise DataError(f"{path}: the model's output is not a tensor with a row per input row")
    outputs = outputs.detach().cpu().contiguous()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, outputs.numpy(), allow_pickle=False)
    elif suffix == ".safetensors":
        from safetensors.torch import save

        buffer.write(save({"output": outputs}))
    else:
        import polars as pl

        frame = pl.DataFrame(output_columns(outputs, task))
        if suffix == ".csv":
            frame.write_csv(buffer)
        else:
            frame.write_parquet(buffer)
    parent, _, name = path.rpartition("/")
    try:
        open_storage(parent or ".").write(name, buffer.getvalue())
    except (StorageError, OSError) as error:
        raise DataError(f"{path}: cannot write: {error}") from None


def predict_file(predictor: Any, data: str, out: str) -> int:
    """`torchkeep predict` for a TensorPredictor: inputs from `data`, outputs to `out`; the number of rows."""
    check_output_path(out)
    inputs, _ = read_inputs(data, predictor.inputs)
    outputs = predictor.predict(inputs)
    write_outputs(outputs, out, predictor.task)
    return len(outputs)
