"""TensorBoard: scalars while training, hyperparameters and final metrics (HParams plugin) at close.

Needs the `tensorboard` package: `pip install 'torchkeep[track]'`. Scalar names: track/events.py.
View with `tensorboard --logdir RUN_DIR/tensorboard` (or the parent of many runs to compare them).
"""

from __future__ import annotations

from typing import Any

from torchkeep.errors import MissingExtraError
from torchkeep.track.events import final_validation, metric_names, scalars

FLUSH_EVERY_S = 10  # TensorBoard's default is 120 s: too long to watch a run as it trains


def summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        raise MissingExtraError("tensorboard", "track") from None
    return SummaryWriter


def flat_hparams(config: dict[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """A nested config as `section.name` keys with values the HParams plugin accepts (None left out)."""
    flat: dict[str, int | float | str | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(map(str, value))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


class TensorBoardTracker:
    """Writes one TensorBoard run into `log_dir` (created now: an unwritable directory fails here, early).

    `config` (the resolved RunConfig as a dict) becomes the run's hyperparameters; at close the metrics
    of the validation the run ends with (the best one when it restores the best weights) are written as
    `final/<metric>` scalars and as the HParams metrics, so runs can be compared in the HPARAMS tab.
    """

    def __init__(self, log_dir: str, config: dict[str, Any] | None = None) -> None:
        self.log_dir, self.config = log_dir, config
        self.writer = summary_writer_class()(log_dir, flush_secs=FLUSH_EVERY_S)
        self._valid: list[dict[str, Any]] = []
        self._step = 0

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._step = step
        if metrics.get("split") == "valid":
            self._valid.append(metrics)
        for name, value in scalars(metrics).items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        try:
            self._write_hparams()
        finally:
            self.writer.close()

    def _write_hparams(self) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = final_validation(self._valid, self.config) or {}
        metrics = {f"final/{k}": float(final[k]) for k in metric_names(final)}
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, self._step)
        # writer.add_hparams would put them in a separate, timestamped sub-run; the summaries written
        # into this run's own event file keep hyperparameters, metrics and curves together.
        file_writer = self.writer._get_file_writer()
        for summary in hparams(flat_hparams(self.config or {}), metrics):
            file_writer.add_summary(summary)
