"""The run's model on its own validation split, rebuilt exactly as train() built it (same data
loading, same seeded split), for the ROC and predicted-vs-actual plots."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from torchkeep.config import RunConfig
from torchkeep.data.loader import BatchLoader
from torchkeep.errors import DataError
from torchkeep.predict.load import load
from torchkeep.predict.predictor import EVAL_BATCH_ROWS
from torchkeep.run import tables_stream
from torchkeep.run.rundir import RunDir
from torchkeep.run.tables import load_data, split, table_fingerprint
from torchkeep.storage import open_storage
from torchkeep.training.evaluate import predict_outputs
from torchkeep.training.metrics import metrics_for_task

log = logging.getLogger("torchkeep")


@dataclass
class ValidationOutputs:
    task: str
    target: str
    outputs: np.ndarray  # binary: logits; regression: predictions in original units
    targets: np.ndarray  # binary: 0/1; regression: original units
    positive: str  # binary: the label of class 1
    metrics: dict[str, float]


def validation_outputs(run_dir: str, data: Any = None) -> ValidationOutputs:
    """Loads the run's model (`torchkeep.load`) and scores the validation split of its data.

    `data`: the frame an in-memory run was trained on (a path run reads its data again).
    """
    storage = open_storage(run_dir)
    saved = json.loads(storage.read("config.json"))
    config = RunConfig.from_dict(saved, source=f"{run_dir}/config.json")
    if data is None and config.data.path is None and config.data.example is None:
        raise DataError("the run was trained on an in-memory frame; pass it to report(run_dir, data=frame)")
    predictor = load(run_dir)
    schema = predictor.schema
    assert schema.target is not None
    if config.data.stream:  # its validation row groups, streamed again (checked to be the same)
        setup = tables_stream.reopen(RunDir.open(run_dir), data if isinstance(data, str) else None)
        assert setup.stream_loaders is not None
        loader: Any = setup.stream_loaders[1]
    else:
        frame, _, config = load_data(config, data)
        started_with = json.loads(storage.read("run.json")).get("data") or {}
        if started_with and started_with.get("hash") != table_fingerprint(frame)["hash"]:
            log.warning("%s changed since the run was trained: the validation split is not the one it saw",
                        config.data.path or "the data")
        _, valid_frame = split(frame, config)
        source = config.data.valid_path or f"{config.data.path or config.data.example} (validation split)"
        loader = BatchLoader(schema.transform(valid_frame, source=source, packed_text=True), EVAL_BATCH_ROWS,
                             shuffle=False)
    outputs, targets = predict_outputs(predictor.model, loader, torch.device("cpu"))
    task = schema.target.task
    metrics = metrics_for_task(task, schema.target.std)(outputs, targets)
    scores, labels = outputs.double().numpy(), targets.double().numpy().reshape(-1)
    if task != "multiclass":
        scores = scores.reshape(-1)
    if task == "regression":  # back to original units
        scores = scores * schema.target.std + schema.target.mean
        labels = labels * schema.target.std + schema.target.mean
    positive = str(schema.target.labels[1]) if task == "binary" else ""
    return ValidationOutputs(task=task, target=schema.target.name, outputs=scores, targets=labels,
                             positive=positive, metrics=metrics)
