"""What goes next to a class-free export so that code in any language can use it:

    schema.json   the TableSchema (vocabularies, medians, means, stds, labels)
    inputs.json   the input tensors column by column, the output and how to read it, parity
    README.txt    the same in words, with how to load the file from Python
"""

from __future__ import annotations

import json
from typing import Any

from torchkeep.bundle import versions
from torchkeep.data.table import TableSchema
from torchkeep.export.formats import (
    INPUT_NAMES,
    OUTPUT_NAME,
    TEXT_INPUT_NAME,
    ExportFormat,
)
from torchkeep.export.parity import Parity


def _categorical_columns(schema: TableSchema) -> list[dict[str, Any]]:
    return [
        {"index": i, "name": c.name, "kind": c.kind, "levels": len(c.levels),
         "encoding": f"1 + position of the value in schema.json categorical[{i}].levels; 0 for null or a value"
                     " not in levels"}
        for i, c in enumerate(schema.categorical)
    ]


def _continuous_columns(schema: TableSchema) -> list[dict[str, Any]]:
    columns: list[dict[str, Any]] = []
    for c in schema.continuous:
        if c.scaling == "robust":
            columns.append({"index": len(columns), "name": c.name, "median": c.median, "center": c.center,
                            "scale": c.scale, "encoding": "z = (value - center) / scale, then z / sqrt(1 + (z / 3)**2),"
                                                          " a null taking the median as its value"})
        else:
            columns.append({"index": len(columns), "name": c.name, "median": c.median, "mean": c.mean, "std": c.std,
                            "encoding": "(value - mean) / std, a null taking the median as its value"})
        for t, (low, high) in enumerate(zip(c.edges or [], (c.edges or [])[1:])):
            columns.append({"index": len(columns), "name": f"{c.name} bin {t}", "from": low, "to": high,
                            "encoding": f"(value - {low!r}) / ({high!r} - {low!r}) clipped to [0, 1], a null taking"
                                        " the median as its value"})
        if c.missing_indicator:
            columns.append({"index": len(columns), "name": f"{c.name} is null",
                            "encoding": f"1.0 where {c.name} is null, else 0.0"})
    return columns


def _text_inputs(schema: TableSchema) -> list[dict[str, Any]]:
    if not schema.text:
        return []
    columns = [{"index": i, "name": c.name, "max_tokens": c.max_tokens, "vocabulary": len(c.vocab),
                "encoding": f"token ids by schema.json text[{i}].vocab.itos (tokenizer: torchkeep.data.text), 0-padded"
                            f" to {c.max_tokens}"} for i, c in enumerate(schema.text)]
    return [{"name": TEXT_INPUT_NAME, "dtype": "int32", "shape": ["batch", len(columns), schema.text[0].max_tokens],
             "columns": columns}]


def output_spec(schema: TableSchema) -> dict[str, Any]:
    target = schema.target
    assert target is not None, "an exported model was trained with a target"
    if target.task == "binary":
        return {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch"],
                "meaning": f"logit of {target.name} = {json.dumps(target.labels[1])}: probability = 1 / (1 + exp(-output));"
                           f" prediction = {json.dumps(target.labels[1])} if output > 0 else {json.dumps(target.labels[0])}"}
    if target.task == "multiclass":
        return {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", len(target.labels)],
                "meaning": f"one logit per label of {target.name}, in the order of `labels`:"
                           " probabilities = softmax(output); prediction = labels[argmax(output)]"}
    return {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch"],
            "meaning": f"{target.name}, standardized: in original units, output * {target.std!r} + {target.mean!r}"}


def inputs_spec(schema: TableSchema, *, export_format: ExportFormat, file_name: str, architecture: str,
                model_args: dict[str, Any], parity: Parity) -> dict[str, Any]:
    """The content of inputs.json."""
    categorical, continuous = _categorical_columns(schema), _continuous_columns(schema)
    target = schema.target
    return {
        "format": export_format.name,
        "file": file_name,
        "task": target.task if target else None,
        "target": target.name if target else None,
        "labels": target.labels if target and target.labels else None,
        "inputs": [
            {"name": INPUT_NAMES[0], "dtype": "int64", "shape": ["batch", len(categorical)], "columns": categorical},
            {"name": INPUT_NAMES[1], "dtype": "float32", "shape": ["batch", len(continuous)], "columns": continuous},
            *_text_inputs(schema),
        ],
        "output": output_spec(schema),
        "model": {"architecture": architecture, "args": model_args},
        "parity": {"rows": parity.rows, "max_abs_diff": parity.max_abs_diff, "tolerance": parity.tolerance},
        "versions": versions(),
    }


def readme(spec: dict[str, Any], export_format: ExportFormat) -> str:
    lines = [
        f"{spec['file']}: a torchkeep model exported as {spec['format']} (task: {spec['task']}, target: {spec['target']}).",
        "",
        "It takes already-encoded tensors, not raw rows. Encode each row with schema.json",
        "(inputs.json lists every column with its encoding):",
        "",
    ]
    for tensor in spec["inputs"]:
        lines.append(f"  {tensor['name']}  {tensor['dtype']} [{', '.join(map(str, tensor['shape']))}]")
        for column in tensor["columns"]:
            lines.append(f"    {column['index']:>3}  {column['name']}: {column['encoding']}")
    output = spec["output"]
    lines += [
        "",
        f"Output: {output['name']}  {output['dtype']} [{', '.join(map(str, output['shape']))}]",
        f"  {output['meaning']}",
        "",
        "From Python (categorical, continuous: torch tensors; numpy arrays for onnxruntime):",
        "",
        *("  " + line for line in export_format.loading.format(file=spec["file"]).splitlines()),
        "",
        f"Checked when exported: max abs diff {spec['parity']['max_abs_diff']:.3g} against the eager model on"
        f" {spec['parity']['rows']:,} real rows (tolerance {spec['parity']['tolerance']:g}).",
        "Raw rows in, predictions out, with the preprocessing included: export --format bundle, then",
        "torchkeep.load(BUNDLE).predict(frame) or torchkeep serve BUNDLE.",
        "",
    ]
    return "\n".join(lines)
