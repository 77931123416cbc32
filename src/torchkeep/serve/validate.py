"""Validation of raw JSON rows against a TableSchema, one request at a time.

Every problem is a RequestError naming the field (`rows[3].dep_delay`) and what was expected, so
that one bad request gets its own 422 and never enters a batch with good ones. Valid rows go to the
model as they are (Predictor.predict_records: data/table_rows.py, no frame for small batches).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from torchkeep.data.table import TableSchema
from torchkeep.data.table_rows import plain_value
from torchkeep.data.text import MAX_TEXT_CHARS


class RequestError(Exception):
    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


_FLOAT_MAX = sys.float_info.max


# JSON types accepted per raw kind; bool is checked first because bool is an int in Python.
def _check(kind: str, value: Any) -> str | None:
    if kind == "text":  # a text column: a model has nothing to say about a missing or empty text
        if not isinstance(value, str):
            return "expected a non-empty string (text)"
        if not value.strip():
            return "expected text with at least one word (got an empty string)"
        if len(value) > MAX_TEXT_CHARS:
            return f"text of {len(value):,} characters; at most {MAX_TEXT_CHARS:,}"
        return _check("string", value)
    if value is None:
        return None
    if kind == "string":
        if not isinstance(value, str):
            return "expected a string or null"
        # JSON allows "\ud800" (a lone surrogate), which no UTF-8 column can hold: polars would fail
        # on it inside a batch, taking the other requests of that batch down with it.
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "expected a string of valid Unicode (a lone surrogate has no UTF-8 form)"
        return None
    if kind == "boolean":
        return None if isinstance(value, bool) else "expected true, false or null"
    if isinstance(value, bool):
        return "expected a number or null, got a boolean"
    if kind == "integer":  # what an integer column holds as it is, whatever the other rows (data/table_rows.py)
        if plain_value(kind, value)[0]:
            return None
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return "expected a 64-bit integer (within 2**53 when written as a float) or null"
        return "expected an integer or null"
    if isinstance(value, int):  # JSON integers are unbounded: 10**400 has no float (OverflowError)
        return None if -_FLOAT_MAX <= value <= _FLOAT_MAX else "expected a number within the float range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "expected a finite number (NaN and infinity are not allowed)"
    return "expected a number or null"


class RowValidator:
    def __init__(self, schema: TableSchema, *, max_rows: int, strict: bool = False) -> None:
        self.columns: list[tuple[str, str]] = [(c.name, c.kind) for c in schema.categorical]
        self.columns += [(c.name, "float") for c in schema.continuous]
        self.columns += [(c.name, "text") for c in schema.text]
        self.known = {name for name, _ in self.columns}
        if schema.target is not None:
            self.known.add(schema.target.name)  # a labelled row may carry its label: ignored
        self.max_rows, self.strict = max_rows, strict

    def rows(self, body: Any) -> list[dict[str, Any]]:
        """The rows of a request body: {"rows": [...]} or one row object."""
        if not isinstance(body, dict):
            raise RequestError("body", "expected a JSON object: {\"rows\": [{...}, ...]} or one row {...}")
        rows = body["rows"] if "rows" in body else [body]
        if not isinstance(rows, list):
            raise RequestError("rows", "expected a list of row objects")
        if not rows:
            raise RequestError("rows", "expected at least one row")
        if len(rows) > self.max_rows:
            raise RequestError("rows", f"{len(rows)} rows; at most {self.max_rows} per request", status=413)
        for index, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(f"rows[{index}]", "expected an object of column values")
            for name, kind in self.columns:
                if name not in row:
                    raise RequestError(f"rows[{index}].{name}", "missing (send null for an unknown value)")
                problem = _check(kind, row[name])
                if problem:
                    shown = f"{len(row[name]):,} characters" if kind == "text" and isinstance(row[name], str) else f"{row[name]!r:.40}"
                    raise RequestError(f"rows[{index}].{name}", f"{problem} (got {shown})")
            if self.strict:
                extra = [k for k in row if k not in self.known]
                if extra:
                    raise RequestError(f"rows[{index}].{extra[0][:100]}", "unknown field (strict mode)")
        return rows

    def warmup_row(self) -> dict[str, Any]:
        """A row the model must answer at start: null everywhere, a word in each text column."""
        return {name: "warmup" if kind == "text" else None for name, kind in self.columns}

    def json_schema(self) -> dict[str, Any]:
        """The request body's JSON schema, for /openapi.json and clients."""
        types = {"string": "string", "boolean": "boolean", "integer": "integer", "float": "number"}
        text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}
        row = {
            "type": "object",
            "properties": {name: text if kind == "text" else {"type": [types[kind], "null"]}
                           for name, kind in self.columns},
            "required": [name for name, _ in self.columns],
            "additionalProperties": not self.strict,
        }
        return {
            "type": "object",
            "properties": {"rows": {"type": "array", "items": row, "minItems": 1, "maxItems": self.max_rows}},
            "required": ["rows"],
        }
