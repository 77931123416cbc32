"""write_report(): a run's PNG plots and summary.md, from metrics.jsonl (and the model, for ROC /
predicted-vs-actual on the validation split)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkeep.errors import DataError, TorchkeepError
from torchkeep.report import plots
from torchkeep.report.summary import RunSummary, summarize_run, summary_markdown
from torchkeep.report.validation import validation_outputs
from torchkeep.storage import open_storage
from torchkeep.track.events import metric_names

log = logging.getLogger("torchkeep")


@dataclass
class Report:
    out: str
    files: list[str] = field(default_factory=list)  # written, in order; summary.md last
    notes: list[str] = field(default_factory=list)  # plots left out, and why


def plotted_metrics(summary: RunSummary) -> list[str]:
    """Validation metrics worth a plot of their own: not `loss` (on the loss plot), nor a metric that is
    the loss under another name (log_loss for classification)."""
    names = list(dict.fromkeys(name for event in summary.valid for name in metric_names(event)))
    return [n for n in names if n != "loss" and not all(e.get(n) == e.get("loss") for e in summary.valid)]


def write_report(run_dir: str, out: str | None = None, *, data: Any = None) -> Report:
    """Writes loss.png, valid_<metric>.png, lr.png, throughput.png, roc.png (binary) or
    predicted_vs_actual.png (regression) and summary.md into `out` (default RUN_DIR/report).

    `data`: the frame of a run trained on an in-memory frame (for the validation-split plots).
    """
    if "://" not in run_dir and not Path(run_dir).is_dir():
        raise DataError(f"{run_dir}: no such run directory")
    summary = summarize_run(run_dir)
    report = Report(out=out or f"{run_dir.rstrip('/')}/report")
    storage = open_storage(report.out)
    images: list[tuple[str, str]] = []

    def save(file: str, title: str, png: bytes) -> None:
        storage.write(file, png)
        report.files.append(f"{report.out.rstrip('/')}/{file}")
        images.append((title, file))

    save("loss.png", "loss", plots.loss_curves(summary))
    if not summary.train:
        every = (summary.config.get("train") or {}).get("log_every_steps")
        report.notes.append(f"no training loss, learning rate or throughput points: the run logs them every {every}"
                            f" optimizer steps and took {summary.steps} (train with a smaller --log-every-steps)")
    for name in plotted_metrics(summary):
        save(f"valid_{name}.png", f"validation {name}", plots.validation_metric(summary, name))
    if any("lr" in e for e in summary.train):
        save("lr.png", "learning rate", plots.train_series(summary, "lr", "learning rate", "learning rate"))
    if any("rows_per_s" in e for e in summary.train):
        save("throughput.png", "throughput",
             plots.train_series(summary, "rows_per_s", "training throughput", "rows / second"))
    if summary.task in ("binary", "regression"):
        _validation_plots(run_dir, data, summary, save, report)
    storage.write("summary.md", summary_markdown(summary, images, report.notes).encode())
    report.files.append(f"{report.out.rstrip('/')}/summary.md")
    return report


def _validation_plots(run_dir: str, data: Any, summary: RunSummary, save: Any, report: Report) -> None:
    kind = "ROC curve" if summary.task == "binary" else "predicted-vs-actual plot"
    try:
        scored = validation_outputs(run_dir, data)
    except TorchkeepError as error:  # the data moved, no model yet...: the other plots still stand
        report.notes.append(f"no {kind}: {error}")
        log.warning("no %s: %s", kind, error)
        return
    if scored.task == "binary":
        save("roc.png", "ROC curve (validation split)",
             plots.roc_curve(scored.outputs, scored.targets, scored.metrics["roc_auc"], scored.positive, summary.name))
    else:
        save("predicted_vs_actual.png", "predicted vs actual (validation split)",
             plots.predicted_vs_actual(scored.outputs, scored.targets, scored.target, summary.name))
