"""What fit() logs, as the trackers and the report name it.

fit() logs events `{"split": "train" | "valid", "epoch", "loss", ...}` with the optimizer step.
TensorBoard and W&B get flat scalar names, one scheme for both:

    loss/train, loss/valid    the loss of each split (one chart section, "loss")
    valid/<metric>            every other validation metric: valid/roc_auc, valid/accuracy, valid/rmse
    lr, rows_per_s            learning rate and training throughput (train events)
    train/<name>              any other number a train event carries
    final/<metric>            the metrics the run ends with (written at close, also as HParams metrics)

`epoch` is not a scalar (the step is the x axis); it stays in metrics.jsonl.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


# Metrics where a larger value is better (the rest: smaller); training/metrics.py re-exports it.
HIGHER_IS_BETTER = {"accuracy", "roc_auc", "r2"}
TOP_LEVEL = ("lr", "rows_per_s")


def scalars(event: dict[str, Any]) -> dict[str, float]:
    """The scalar names and values of one fit() event (see the module docstring)."""
    split = event.get("split")
    named: dict[str, float] = {}
    for key, value in event.items():
        if key in ("split", "epoch", "step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key == "loss" and split:
            named[f"loss/{split}"] = float(value)
        elif key in TOP_LEVEL or not split:
            named[key] = float(value)
        else:
            named[f"{split}/{key}"] = float(value)
    return named


def metric_names(valid: dict[str, Any]) -> list[str]:
    """The metric keys of a validation event (no bookkeeping fields)."""
    return [k for k, v in valid.items() if k not in ("split", "epoch", "step", "time") and isinstance(v, (int, float))]


def monitor_of(config: dict[str, Any] | None) -> tuple[str, bool]:
    """(metric, higher is better) that a run's TrainConfig watches; ("loss", False) without a config."""
    train = (config or {}).get("train") or {}
    monitor = train.get("monitor") or "loss"
    mode = train.get("monitor_mode")
    return monitor, (mode == "max") if mode else monitor in HIGHER_IS_BETTER


def best_validation(valid_events: Iterable[dict[str, Any]], monitor: str, higher: bool) -> dict[str, Any] | None:
    """The validation event with the best `monitor` (the first of equals, as fit() keeps it)."""
    best: dict[str, Any] | None = None
    for event in valid_events:
        value = event.get(monitor)
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        if best is None or (value > best[monitor] if higher else value < best[monitor]):
            best = event
    return best


def final_validation(valid_events: list[dict[str, Any]], config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The validation whose weights the run ends with: the best one when the run restores it, else the last."""
    if not valid_events:
        return None
    restore_best = ((config or {}).get("train") or {}).get("restore_best", True) and config is not None
    if restore_best:
        return best_validation(valid_events, *monitor_of(config)) or valid_events[-1]
    return valid_events[-1]
