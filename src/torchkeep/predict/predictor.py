"""Predictor: a table, text or image model with its schema; raw data in, predictions in original units out.

Each kind goes through its schema's own `transform` (TableSchema: rows; ImageSchema: pixels at its
size) and `decode` (labels and probabilities, or original units): `predict`, `evaluate`, the CLI and
the HTTP server all come through `predict_frame` / `evaluate`, so serving can never preprocess
differently from training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from torchkeep.data.image_io import RawImages
from torchkeep.data.io import as_frame, read_table
from torchkeep.data.loader import BatchLoader
from torchkeep.data.table_rows import FAST_PATH_ROWS, TableRows, output_records, rows_frame, text_problem
from torchkeep.data.text import check_texts
from torchkeep.models.build import loss_for_task
from torchkeep.predict.images import read_for_predict
from torchkeep.predict.scripted import SmallBatchModel
from torchkeep.training.evaluate import predict_outputs
from torchkeep.training.metrics import metrics_for_task

EVAL_BATCH_ROWS = 65_536
EVAL_BATCH_IMAGES = 256  # a CNN's activations are ~100x an image's bytes: 64k images at once would need GBs


def eval_batch_rows(tensors: dict[str, Any]) -> int:
    """Rows per batch when nothing is learned (validation, evaluate, predict): fewer for images."""
    return EVAL_BATCH_IMAGES if "image" in tensors else EVAL_BATCH_ROWS


def evaluate_tensors(model: torch.nn.Module, schema: Any, tensors: dict[str, Any]) -> dict[str, float]:
    """Loss and the task's metrics of `model` on transformed tensors (with `target`)."""
    assert schema.target is not None
    loader = BatchLoader(tensors, eval_batch_rows(tensors), shuffle=False)
    outputs, targets = predict_outputs(model, loader, next(model.parameters()).device)
    task = schema.target.task
    return {"loss": loss_for_task(task)(outputs, targets).item(), **metrics_for_task(task, schema.target.std)(outputs, targets)}


class Predictor:
    """A trained model with its preprocessing: raw frames (or images) in, predictions in original units out."""

    def __init__(self, model: torch.nn.Module, schema: Any, meta: dict[str, Any], source: str) -> None:
        self.model, self.schema, self.meta, self.source = model.eval(), schema, meta, source
        self.device = next(model.parameters()).device  # inputs go there; outputs come back to the CPU
        self.rows = TableRows(schema) if self.kind == "table" else None  # rows (dicts) -> tensors, no frame
        self.small_batch_model: SmallBatchModel | None = None  # TorchScript where it is the same (predict_records)

    @property
    def task(self) -> str:
        assert self.schema.target is not None
        return self.schema.target.task

    @property
    def kind(self) -> str:
        return getattr(self.schema, "kind", "table")

    def predict(self, data: Any, *, source: str = "data", image_dir: str | None = None) -> pl.DataFrame:
        """A frame with `prediction` (labels / original units) and, for classification, probabilities."""
        if self.kind == "image":  # a folder, CSV of files, idx folder or pixels
            raw = read_for_predict(self.schema, data, with_labels=False, image_dir=image_dir)
            predictions = self._predict(self.schema.transform(raw, with_target=False, source=str(source)))
            return pl.concat([pl.DataFrame({"file": raw.files}), predictions], how="horizontal") if raw.files else predictions
        frame = read_table(data) if isinstance(data, str) else as_frame(data)
        return self.predict_frame(frame, source=data if isinstance(data, str) else source)

    def predict_frame(self, frame: pl.DataFrame | torch.Tensor, *, source: str = "data") -> pl.DataFrame:
        """The one prediction path of `predict`, the CLI and the HTTP server. For an image model the
        "frame" is uint8 pixels [N, C, H, W] at the schema's size."""
        if isinstance(frame, torch.Tensor):
            raw = RawImages(images=frame.numpy(), labels=None, files=[], skipped=[])
            return self._predict(self.schema.transform(raw, with_target=False, source=source))
        if self.schema.text:
            check_texts(frame, [c.name for c in self.schema.text], source)
        return self._predict(self.schema.transform(frame, with_target=False, source=source, packed_text=True))

    def predict_records(self, rows: list[dict[str, Any]], *, source: str = "rows") -> list[dict[str, Any] | None]:
        """Rows as JSON gives them -> one JSON object per row: `prediction` (label or original units) and,
        for classification, `probabilities` per label; None where the output is not finite. For a table
        model, up to FAST_PATH_ROWS rows go straight to tensors (TableRows, no frame), more through a
        frame: the same tensors either way. For an image model each row is {"image": uint8 [C, H, W]}."""
        if self.small_batch_model is None:
            self.small_batch_model = SmallBatchModel(self.model, self.device)
        model = self.small_batch_model
        if self.rows is None:
            raw = RawImages(images=np.stack([row["image"] for row in rows]), labels=None, files=[], skipped=[])
            tensors = self.schema.transform(raw, with_target=False, source=source)
            return output_records(self.schema.target, self._outputs(tensors, model))
        text = [c.name for c in self.schema.text]
        tensors = None
        if len(rows) <= FAST_PATH_ROWS and not (text and text_problem(rows, text)):
            tensors = self.rows.encode(rows, packed_text=True)
        if tensors is None:
            frame = rows_frame(rows, self.schema, source)
            if text:
                check_texts(frame, text, source)
            tensors = self.schema.transform(frame, with_target=False, source=source, packed_text=True)
        return output_records(self.schema.target, self._outputs(tensors, model))

    def _outputs(self, tensors: dict[str, Any], model: Any = None) -> torch.Tensor:
        model = model if model is not None else self.model
        rows, batch_rows = len(next(iter(tensors.values()))), eval_batch_rows(tensors)
        outputs = []
        with torch.inference_mode():  # cheaper per operation than no_grad; nothing here needs autograd
            if rows <= batch_rows and self.device.type == "cpu" and all(isinstance(v, torch.Tensor) for v in tensors.values()):
                # a request's few rows: no slices, no copies (packed text is padded by its slicing)
                return model(**tensors)
            for start in range(0, rows, batch_rows):
                batch = {k: v[start : start + batch_rows].to(self.device) for k, v in tensors.items()}
                outputs.append(model(**batch).cpu())
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _predict(self, tensors: dict[str, Any]) -> pl.DataFrame:
        return self.schema.decode(self._outputs(tensors))

    def evaluate(self, data: Any, *, source: str = "data", image_dir: str | None = None) -> dict[str, float]:
        if self.kind == "image":
            raw = read_for_predict(self.schema, data, with_labels=True, image_dir=image_dir)
            return evaluate_tensors(self.model, self.schema, self.schema.transform(raw, source=str(data)))
        frame = read_table(data) if isinstance(data, str) else as_frame(data)
        tensors = self.schema.transform(frame, source=source if not isinstance(data, str) else data, packed_text=True)
        return evaluate_tensors(self.model, self.schema, tensors)
