"""The report's figures, drawn with matplotlib's object API (no pyplot: no global state, no display).

Each function returns PNG bytes. matplotlib comes with `pip install 'torchkeep[track]'`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from torchkeep.errors import MissingExtraError
from torchkeep.report.summary import RunSummary

TRAIN_COLOR, VALID_COLOR, BEST_COLOR = "#1f77b4", "#d62728", "#2ca02c"


def _axes(title: str, xlabel: str = "optimizer step", ylabel: str = "", size: tuple[float, float] = (7.0, 4.2)) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtraError("matplotlib", "track") from None
    figure = Figure(figsize=size, dpi=110, layout="constrained")
    axes = figure.subplots()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    return axes


def _png(axes: Any) -> bytes:
    buffer = io.BytesIO()
    axes.figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _series(events: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(e["step"], e[key]) for e in events if isinstance(e.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _mark_best(axes: Any, summary: RunSummary, key: str) -> None:
    best = summary.best
    if best is not None and isinstance(best.get(key), (int, float)):
        axes.axvline(best["step"], color=BEST_COLOR, linestyle=":", linewidth=1)
        axes.plot([best["step"]], [best[key]], marker="*", markersize=14, color=BEST_COLOR, linestyle="none",
                  label=f"best {summary.monitor} (step {best['step']}): {key} {best[key]:.4f}")


LOSS_NAMES = {"binary": "log loss", "multiclass": "cross-entropy", "regression": "MSE of the standardized target"}


def loss_curves(summary: RunSummary) -> bytes:
    name = LOSS_NAMES.get(summary.task or "")
    if summary.task == "regression" and (summary.config.get("data") or {}).get("standardize_target") is False:
        name = "MSE"
    axes = _axes(f"{summary.name}: loss", ylabel=f"loss ({name})" if name else "loss")
    steps, values = _series(summary.train, "loss")
    if steps:
        axes.plot(steps, values, color=TRAIN_COLOR, linewidth=1.5, label="train (mean over the logging window)")
    steps, values = _series(summary.valid, "loss")
    if steps:
        axes.plot(steps, values, color=VALID_COLOR, marker="o", linewidth=1.5, label="valid")
    _mark_best(axes, summary, "loss")
    axes.legend(loc="best", fontsize=8)
    return _png(axes)


def validation_metric(summary: RunSummary, name: str) -> bytes:
    axes = _axes(f"{summary.name}: validation {name}", ylabel=name)
    steps, values = _series(summary.valid, name)
    axes.plot(steps, values, color=VALID_COLOR, marker="o", linewidth=1.5, label=f"valid {name}")
    _mark_best(axes, summary, name)
    axes.legend(loc="best", fontsize=8)
    return _png(axes)


def train_series(summary: RunSummary, key: str, title: str, ylabel: str) -> bytes:
    axes = _axes(f"{summary.name}: {title}", ylabel=ylabel)
    steps, values = _series(summary.train, key)
    axes.plot(steps, values, color=TRAIN_COLOR, marker="." if len(steps) < 50 else None, linewidth=1.5)
    if key == "lr":
        axes.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    else:
        axes.yaxis.set_major_formatter("{x:,.0f}")
    return _png(axes)


def roc_curve(scores: np.ndarray, labels: np.ndarray, auc: float, positive: str, name: str) -> bytes:
    """ROC of the validation split: one point per distinct score threshold, highest first."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order].astype(bool)
    last_of_tie = np.r_[np.nonzero(np.diff(scores))[0], scores.size - 1]  # ties move the curve together
    true_positives = np.cumsum(labels)[last_of_tie]
    false_positives = np.cumsum(~labels)[last_of_tie]
    tpr = np.r_[0.0, true_positives / max(labels.sum(), 1)]
    fpr = np.r_[0.0, false_positives / max((~labels).sum(), 1)]
    axes = _axes(f"{name}: ROC curve, validation split ({labels.size:,} rows)", xlabel="false positive rate",
                 ylabel="true positive rate", size=(5.6, 5.2))
    axes.plot(fpr, tpr, color=VALID_COLOR, linewidth=2, label=f"model (AUC {auc:.4f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.legend(loc="lower right", fontsize=8, title=f"positive class: {positive}", title_fontsize=8)
    return _png(axes)


def predicted_vs_actual(predicted: np.ndarray, actual: np.ndarray, target: str, name: str) -> bytes:
    error = predicted - actual
    rmse = float(np.sqrt(np.mean(error**2)))
    total = float(np.sum((actual - actual.mean()) ** 2))
    r2 = 1 - float(np.sum(error**2)) / total if total > 0 else float("nan")
    axes = _axes(f"{name}: predicted vs actual, validation split ({actual.size:,} rows)", xlabel=f"actual {target}",
                 ylabel=f"predicted {target}", size=(5.6, 5.2))
    alpha = 0.6 if actual.size < 2_000 else 0.25
    axes.scatter(actual, predicted, s=8, alpha=alpha, color=TRAIN_COLOR, edgecolors="none",
                 label=f"rows (RMSE {rmse:.4g}, R² {r2:.3f})")
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="perfect: predicted = actual")
    axes.legend(loc="upper left", fontsize=8)
    return _png(axes)


def study_metric(title: str, metric: str, trials: list[tuple[str, list[dict[str, Any]], str]], best: str | None) -> bytes:
    """A study's validation `metric` per trial over training: (trial, validation events, status) each; trials
    a scheduler stopped early dashed, the best trial thick."""
    axes = _axes(title, ylabel=metric)
    for name, events, status in trials:
        steps, values = _series(events, metric)
        if not steps:
            continue
        stopped = status != "complete"
        axes.plot(steps, values, marker="o", markersize=3, linewidth=2.5 if name == best else 1.2,
                  linestyle="--" if stopped else "-", alpha=1.0 if name == best else 0.75,
                  label=f"{name}{' (best)' if name == best else ''}{' stopped' if stopped else ''}")
    axes.legend(loc="best", fontsize=7, ncol=2)
    return _png(axes)
