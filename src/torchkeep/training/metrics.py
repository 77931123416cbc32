"""Pure metric functions on tensors. Each takes model outputs (logits / values) and encoded targets."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from torchkeep.track.events import HIGHER_IS_BETTER  # noqa: F401 (re-exported: which way each metric is better)

MetricFn = Callable[[torch.Tensor, torch.Tensor], dict[str, float]]

# What early stopping and best-k watch by default, and which way is better for each.
DEFAULT_MONITOR = {"binary": ("roc_auc", "max"), "multiclass": ("log_loss", "min"), "regression": ("rmse", "min")}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve via the rank-sum statistic, ties given their average rank."""
    scores, labels = scores.double().reshape(-1), labels.reshape(-1) > 0.5
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    unique, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)
    last_rank = torch.cumsum(counts, 0).double()
    average_rank = last_rank - (counts.double() - 1) / 2
    rank_sum = average_rank[inverse][labels].sum().item()
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def binary_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    logits, targets = logits.float().reshape(-1), targets.float().reshape(-1)
    return {
        "accuracy": ((logits > 0).float() == targets).float().mean().item(),
        "roc_auc": roc_auc(logits, targets),
        "log_loss": F.binary_cross_entropy_with_logits(logits, targets).item(),
    }


def multiclass_metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    logits, targets = logits.float(), targets.long()
    return {
        "accuracy": (logits.argmax(dim=1) == targets).float().mean().item(),
        "log_loss": F.cross_entropy(logits, targets).item(),
    }


def regression_metrics(predictions: torch.Tensor, targets: torch.Tensor, scale: float = 1.0) -> dict[str, float]:
    """RMSE and MAE in original units (`scale` undoes target standardization); R2 is unit-free."""
    predictions, targets = predictions.double().reshape(-1), targets.double().reshape(-1)
    error = predictions - targets
    total = ((targets - targets.mean()) ** 2).sum().item()
    return {
        "rmse": error.pow(2).mean().sqrt().item() * scale,
        "mae": error.abs().mean().item() * scale,
        "r2": 1 - error.pow(2).sum().item() / total if total > 0 else float("nan"),
    }


def metrics_for_task(task: str, target_scale: float = 1.0) -> MetricFn:
    if task == "binary":
        return binary_metrics
    if task == "multiclass":
        return multiclass_metrics
    return lambda predictions, targets: regression_metrics(predictions, targets, target_scale)


def for_display(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics to print: `loss` is left out where it is the same number as `log_loss`."""
    return {k: v for k, v in metrics.items() if not (k.endswith("loss") and k.replace("loss", "log_loss") in metrics)}
