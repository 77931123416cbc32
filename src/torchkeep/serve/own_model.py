"""Serving a model trained with `torchkeep.fit`: JSON tensors in, the model's raw outputs out.

    model(input):     {"inputs": [row, row, ...]}                  each row nested lists of the row's shape
    model(**inputs):  {"inputs": {"pixels": [row, ...], "hour": [row, ...]}}   the same rows in every name
    -> {"outputs": [...]}, one nested list per row; for a run whose task is recorded (a named loss or
       built-in metrics) also "predictions": [{"prediction": class index, "probabilities": {"0": p, ...}}]
       for classification, [{"prediction": value}] for regression with one value per row

A row's shape and dtype are those of the training tensors (bundle.json "preprocessor" "inputs": the
first training batch's shape without its batch dimension). Every number is checked here, one request
at a time, so that a wrong one is that request's 422 naming it (`inputs[3]: expected 8 numbers, got 7`,
`inputs.hour[0]: expected an integer, got 2.5`) and never enters a batch with other requests.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from torchkeep.data.inputs import INPUT
from torchkeep.errors import ServeError
from torchkeep.serve.validate import RequestError
from torchkeep.predict.array_files import decode_outputs


def servable_problem(inputs: dict[str, Any]) -> str | None:
    """Why a model's recorded inputs cannot be taken as JSON (None: they can)."""
    if inputs["call"] == "other" or not inputs["inputs"]:
        return "its training inputs were not one tensor or a dict of tensors, so there is no input to check requests against"
    for spec in inputs["inputs"]:
        dtype = getattr(torch, spec["dtype"], None)
        if not isinstance(dtype, torch.dtype) or dtype.is_complex:
            return f"input '{spec['name']}' is {spec['dtype']}, which JSON numbers cannot carry"
        if any(size is None for size in spec["shape"][1:]):
            return f"input '{spec['name']}' has no fixed row shape"
    return None


def _items(dims: list[int], word: str) -> str:
    """[4] -> "4 numbers"; [2, 4] -> "2 lists of 4 numbers"; [1, 4] -> "1 list of 4 numbers"."""
    plural = "" if dims[0] == 1 else "s"
    if len(dims) == 1:
        return f"{dims[0]} {word}{plural}"
    return f"{dims[0]} list{plural} of {_items(dims[1:], word)}"


def _shape_text(dims: list[int], word: str = "number") -> str:
    """[] -> "a number"; [4] -> "a list of 4 numbers"; [2, 4] -> "a list of 2 lists of 4 numbers"."""
    if not dims:
        return f"an {word}" if word[0] in "aeiou" else f"a {word}"
    return f"a list of {_items(dims, word)}"


def _shown(value: Any) -> str:
    """A JSON value as the client wrote it."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return "an object"
    return f"{value!r:.40}"


class _Input:
    """One named input: its per-row shape, its dtype, and the check of one JSON value against them."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.name, self.dims = spec["name"], [int(size) for size in spec["shape"][1:]]
        self.dtype: torch.dtype = getattr(torch, spec["dtype"])
        self.dtype_name, self.word = spec["dtype"], "number"
        if self.dtype == torch.bool:
            self.kind, self.word = "bool", "boolean"
        elif self.dtype.is_floating_point:
            self.kind = "float"
            self.limit = float(torch.finfo(self.dtype).max)
        else:
            self.kind, self.word = "integer", "integer"
            self.low, self.high = torch.iinfo(self.dtype).min, torch.iinfo(self.dtype).max

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype_name, "shape": ["batch", *self.dims],
                "row": _shape_text(self.dims, self.word)}

    def scalar_problem(self, value: Any) -> str | None:
        kind = type(value)  # exact types: a JSON true is a bool, and bool is an int in Python
        if self.kind == "float":
            if kind is not float and kind is not int:
                return f"expected a number, got {_shown(value)}"
            if kind is float and not math.isfinite(value):
                return f"expected a finite number, got {value!r}"
            if -self.limit <= value <= self.limit:
                return None
            return f"expected a number within the {self.dtype_name} range, got {value:.6g}"
        if self.kind == "integer":
            if kind is float and value.is_integer():
                value = int(value)
            elif kind is not int:
                return f"expected an integer, got {_shown(value)}"
            return None if self.low <= value <= self.high else f"expected an integer in [{self.low}, {self.high}], got {value}"
        return None if kind is bool else f"expected true or false, got {_shown(value)}"

    def check(self, value: Any, field: str, dims: list[int]) -> None:
        if not dims:
            problem = self.scalar_problem(value)
            if problem:
                raise RequestError(field, problem)
            return
        if not isinstance(value, list):
            raise RequestError(field, f"expected {_shape_text(dims, self.word)}, got {_shown(value)}")
        if len(value) != dims[0]:
            raise RequestError(field, f"expected {_items(dims, self.word)}, got {len(value)}")
        if len(dims) == 1:  # the innermost level holds most values: one comparison each for a float in range
            limit = self.limit if self.kind == "float" else -1.0
            for index, item in enumerate(value):
                if type(item) is float and -limit <= item <= limit:
                    continue
                problem = self.scalar_problem(item)
                if problem:
                    raise RequestError(f"{field}[{index}]", problem)
            return
        for index, item in enumerate(value):
            self.check(item, f"{field}[{index}]", dims[1:])

    def rows(self, value: Any, field: str, max_rows: int) -> torch.Tensor:
        if not isinstance(value, list):
            raise RequestError(field, f"expected a list of rows, each {_shape_text(self.dims, self.word)}, got {_shown(value)}")
        if not value:
            raise RequestError(field, "expected at least one row")
        if len(value) > max_rows:
            raise RequestError(field, f"{len(value)} rows; at most {max_rows} per request", status=413)
        for index, row in enumerate(value):
            self.check(row, f"{field}[{index}]", self.dims)
        return torch.tensor(value, dtype=self.dtype).reshape(len(value), *self.dims)


class TensorRequests:
    """Requests to a TensorPredictor: what serve/app.py asks of a validator (rows, warmup_row,
    json_schema), plus the prediction of a batch of rows and the answer's shape."""

    def __init__(self, predictor: Any, *, max_rows: int, strict: bool = False) -> None:
        problem = servable_problem(predictor.inputs)
        if problem:
            instead = ("call torchkeep.load(...).model from code of your own" if predictor.inputs["call"] == "other"
                       else f"serve an export of it (torchkeep export {predictor.source} --format onnx) with a runtime"
                       " of your own")
            raise ServeError(f"{predictor.source}: cannot serve this model: {problem}; {instead}")
        self.predictor, self.max_rows, self.strict = predictor, max_rows, strict
        self.positional = predictor.inputs["call"] == "positional"
        self.inputs = [_Input(spec) for spec in predictor.inputs["inputs"]]
        self.task = predictor.task

    def rows(self, body: Any) -> list[Any]:
        """The rows of a request: one tensor each (model(input)) or one dict of tensors each (model(**inputs))."""
        if not isinstance(body, dict) or "inputs" not in body:
            raise RequestError("body", f"expected a JSON object {{\"inputs\": {self._example()}}}")
        if self.strict and set(body) - {"inputs"}:
            raise RequestError(str(min(set(body) - {"inputs"}))[:100], "unknown field (strict mode)")
        given = body["inputs"]
        if self.positional:
            if isinstance(given, dict) and INPUT in given:  # the name the bundle gives a single input
                return list(self.inputs[0].rows(given[INPUT], f"inputs.{INPUT}", self.max_rows).unbind(0))
            return list(self.inputs[0].rows(given, "inputs", self.max_rows).unbind(0))
        if not isinstance(given, dict):
            raise RequestError("inputs", f"expected an object of named inputs {self._example()}, got {_shown(given)}")
        names = [spec.name for spec in self.inputs]
        for name in names:
            if name not in given:
                raise RequestError(f"inputs.{name}", f"missing (the model takes {', '.join(names)})")
        if self.strict and set(given) - set(names) - {"target"}:
            raise RequestError(f"inputs.{min(set(given) - set(names) - {'target'})[:100]}", "unknown input (strict mode)")
        tensors: dict[str, torch.Tensor] = {}
        for spec in self.inputs:
            tensors[spec.name] = spec.rows(given[spec.name], f"inputs.{spec.name}", self.max_rows)
            first = self.inputs[0].name
            rows, expected = len(tensors[spec.name]), len(tensors[first])
            if rows != expected:
                raise RequestError(f"inputs.{spec.name}", f"{rows} row{'s' * (rows != 1)}, but inputs.{first} has"
                                   f" {expected}; every input needs one entry per row")
        return [dict(zip(tensors, row)) for row in zip(*(t.unbind(0) for t in tensors.values()))]

    def warmup_row(self) -> Any:
        """A row the model must answer at start: zeros (in range for any embedding)."""
        row = {spec.name: torch.zeros(spec.dims, dtype=spec.dtype) for spec in self.inputs}
        return row[INPUT] if self.positional else row

    def predict(self, rows: list[Any]) -> list[dict[str, Any] | None]:
        """The batcher's call: rows of any requests in, one answer per row (None where it is not finite)."""
        if self.positional:
            outputs = self.predictor.predict(torch.stack(rows))
        else:
            outputs = self.predictor.predict({spec.name: torch.stack([row[spec.name] for row in rows])
                                              for spec in self.inputs})
        if not isinstance(outputs, torch.Tensor) or outputs.ndim == 0 or len(outputs) != len(rows):
            raise ServeError(f"the model's output is not one tensor with a row per input row (got {type(outputs).__name__})")
        finite = torch.isfinite(outputs.reshape(len(rows), -1).double()).all(dim=1).tolist() \
            if outputs.is_floating_point() else [True] * len(rows)
        answers: list[dict[str, Any] | None] = [{"output": row} if ok else None
                                                for row, ok in zip(outputs.tolist(), finite)]
        for answer, decoded in zip(answers, self._decoded(outputs)):
            if answer is not None and decoded is not None:
                answer.update(decoded)
        return answers

    def _decoded(self, outputs: torch.Tensor) -> list[dict[str, Any] | None]:
        """What the task says the outputs mean (predict/array_files.decode_outputs), in the table server's shape."""
        decoded = decode_outputs(outputs, self.task)
        if decoded is None:
            return [None] * len(outputs)
        predictions, probabilities = decoded
        if probabilities is None:
            return [{"prediction": value} for value in predictions]
        labels = [str(i) for i in range(probabilities.shape[1])]
        return [{"prediction": value, "probabilities": dict(zip(labels, row))}
                for value, row in zip(predictions, probabilities.tolist())]

    def answer(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"outputs": [result["output"] for result in results]}
        if results and "prediction" in results[0]:
            body["predictions"] = [{k: v for k, v in result.items() if k != "output"} for result in results]
        return body

    def _example(self) -> str:
        if self.positional:
            return f"[row, ...] with each row {_shape_text(self.inputs[0].dims, self.inputs[0].word)}"
        return "{" + ", ".join(f'"{spec.name}": [row, ...]' for spec in self.inputs) + "}"

    def describe(self) -> dict[str, Any]:
        """/metadata: what the model takes and what it answers."""
        meta = self.predictor.meta
        return {
            "kind": "tensors", "model": meta.get("model_args", {}).get("import"), "task": self.task,
            "call": "model(input)" if self.positional else f"model({', '.join(f'{s.name}=...' for s in self.inputs)})",
            "inputs": [spec.describe() for spec in self.inputs],
            "request": f'{{"inputs": {self._example()}}}',
            "response": '{"outputs": [one nested list (or number) per row]' +
                        (', "predictions": [...]}' if self.task else "}"),
        }

    def _row_schema(self, spec: _Input) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": {"float": "number", "integer": "integer", "bool": "boolean"}[spec.kind]}
        for size in reversed(spec.dims):
            schema = {"type": "array", "items": schema, "minItems": size, "maxItems": size}
        return {"type": "array", "items": schema, "minItems": 1, "maxItems": self.max_rows}

    def json_schema(self) -> dict[str, Any]:
        """The request body's JSON schema, for /openapi.json, /metadata and clients."""
        if self.positional:
            inputs = self._row_schema(self.inputs[0])
        else:
            inputs = {"type": "object", "properties": {spec.name: self._row_schema(spec) for spec in self.inputs},
                      "required": [spec.name for spec in self.inputs], "additionalProperties": not self.strict}
        return {"type": "object", "properties": {"inputs": inputs}, "required": ["inputs"]}

    def response_schema(self) -> dict[str, Any]:
        number = {"type": "number"}
        prediction = {"type": "object", "properties": {
            "prediction": {"description": "class index, or the predicted value"},
            "probabilities": {"type": "object", "additionalProperties": number}}}
        return {"type": "object", "properties": {
            "outputs": {"type": "array", "description": "the model's raw output (e.g. logits), one per row"},
            "predictions": {"type": "array", "items": prediction, "description": "present where the run recorded a task"}}}
