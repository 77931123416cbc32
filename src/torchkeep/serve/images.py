"""Request validation for image models: images as base64 in JSON, or as multipart file uploads.

    {"rows": [{"image": "<base64 PNG/JPEG>"}, ...]}   or one {"image": "..."}
    multipart/form-data with one or more file parts (any field name), in order

Each image is decoded and resized to the bundle's size here, one request at a time, so that an
undecodable image is that request's 422 naming the item (`rows[2].image`) and never enters a batch.
Normalization is the model's own.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
from typing import Any

import numpy as np

from torchkeep.data.images import ImageSchema
from torchkeep.errors import DataError
from torchkeep.serve.validate import RequestError


class ImageRowValidator:
    accepts_files = True

    def __init__(self, schema: ImageSchema, *, max_rows: int, strict: bool = False) -> None:
        self.schema, self.max_rows, self.strict = schema, max_rows, strict
        self.columns: list[tuple[str, str]] = [("image", "image")]

    def _decode(self, data: bytes, field: str) -> np.ndarray:
        try:
            return self.schema.decode_bytes(data, field)
        except DataError as error:
            raise RequestError(field, str(error).removeprefix(f"{field}: ")) from None

    def rows(self, body: Any) -> list[dict[str, Any]]:
        """Decoded rows of a JSON body: each {"image": uint8 [C, H, W]}."""
        if not isinstance(body, dict):
            raise RequestError("body", 'expected a JSON object: {"rows": [{"image": "<base64>"}, ...]} or one {"image": ...}')
        rows = body.get("rows", [body])
        if not isinstance(rows, list) or not rows:
            raise RequestError("rows", "expected a non-empty list of {\"image\": \"<base64>\"} objects")
        if len(rows) > self.max_rows:
            raise RequestError("rows", f"{len(rows)} rows; at most {self.max_rows} per request", status=413)
        decoded = []
        for index, row in enumerate(rows):
            field = f"rows[{index}].image"
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise RequestError(field, "expected a base64-encoded image string")
            if self.strict and set(row) - {"image", "label"}:
                raise RequestError(f"rows[{index}].{min(set(row) - {'image', 'label'})[:100]}", "unknown field (strict mode)")
            text = row["image"]
            if text.startswith("data:") and "," in text:  # a data URL: data:image/png;base64,....
                text = text.split(",", 1)[1]
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise RequestError(field, "not valid base64") from None
            decoded.append({"image": self._decode(data, field)})
        return decoded

    def files(self, content_type: bytes, body: bytes) -> list[dict[str, Any]]:
        """Decoded rows of a multipart/form-data body: one per file part, in order."""
        head = b"Content-Type: " + content_type + b"\r\nMIME-Version: 1.0\r\n\r\n"
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        if not message.is_multipart():
            raise RequestError("body", "malformed multipart/form-data body")
        parts = [part for part in message.iter_parts() if part.get_filename() is not None
                 or part.get_content_type() != "text/plain"]
        if not parts:
            raise RequestError("files", "no file parts in the multipart body")
        if len(parts) > self.max_rows:
            raise RequestError("files", f"{len(parts)} files; at most {self.max_rows} per request", status=413)
        rows = []
        for index, part in enumerate(parts):
            name = part.get_filename() or part.get_param("name", header="content-disposition") or ""
            field = f"files[{index}]" + (f" ({name[:100]})" if name else "")
            rows.append({"image": self._decode(part.get_payload(decode=True) or b"", field)})
        return rows

    def warmup_row(self) -> dict[str, Any]:
        """The row the model must answer at start: a black image."""
        return {"image": np.zeros((self.schema.channels, self.schema.height, self.schema.width), dtype=np.uint8)}

    def json_schema(self) -> dict[str, Any]:
        row = {"type": "object", "properties": {"image": {"type": "string", "contentEncoding": "base64",
                                                          "description": "a PNG, JPEG or other Pillow-readable image"}},
               "required": ["image"], "additionalProperties": not self.strict}
        return {"type": "object", "required": ["rows"],
                "properties": {"rows": {"type": "array", "items": row, "minItems": 1, "maxItems": self.max_rows}}}
