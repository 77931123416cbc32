"""Progress while training: a rich bar on a terminal, one line per epoch elsewhere, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from torchkeep.training.metrics import for_display


def _format(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in for_display(metrics).items())


class Progress:
    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None, rich: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.use_rich = (self.stream.isatty() if rich is None else rich) and not quiet
        self._bar: Any = None
        self._task: Any = None
        self._last_valid = ""  # shown on the next epoch's bar until the next validation

    def start_run(self, epochs: int, batches: int, done: int = 0) -> None:
        """One bar over a whole run of many short epochs (validated by steps, not per epoch)."""
        self.start_epoch(0, epochs, batches, done, label=f"{epochs} epochs")

    def validated(self, step: int, steps: int, epoch: int, valid: dict[str, float]) -> None:
        """A validation inside a run-long bar: shown on the bar, or one line without a terminal."""
        self._last_valid = _format(valid)
        if self._bar is not None:
            self._bar.update(self._task, valid=self._last_valid)
            return
        if not self.quiet:
            elapsed = time.perf_counter() - self._started
            print(f"step {step}/{steps} (epoch {epoch})  loss {self._last_loss:.4f}  {self._last_valid}"
                  f"  {elapsed:.1f} s", file=self.stream, flush=True)

    def end_run(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def start_epoch(self, epoch: int, epochs: int, batches: int, done: int = 0, label: str | None = None) -> None:
        self._epoch, self._epochs = epoch, epochs
        self._started, self._rows = time.perf_counter(), 0
        self._last_loss = float("nan")
        if self.use_rich:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} rows/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[valid]}"),
                console=None,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                "train", total=batches, completed=done, epoch=label or f"{epoch + 1}/{epochs}", rate="-", loss="-",
                valid=self._last_valid,
            )

    def update(self, rows: int, loss: float | None = None, valid: dict[str, float] | None = None) -> None:
        self._rows += rows
        if loss is not None:
            self._last_loss = loss
        if self._bar is not None:
            elapsed = time.perf_counter() - self._started
            fields: dict[str, Any] = {"rate": f"{self._rows / elapsed:,.0f}" if elapsed > 0 else "-"}
            if loss is not None:
                fields["loss"] = f"{loss:.4f}"
            if valid:
                fields["valid"] = self._last_valid = _format(valid)
            self._bar.update(self._task, advance=1 if rows else 0, **fields)

    def end_epoch(self, valid: dict[str, float] | None = None) -> None:
        elapsed = time.perf_counter() - self._started
        if valid:
            self._last_valid = _format(valid)
        if self._bar is not None:
            if valid:
                self._bar.update(self._task, valid=self._last_valid)
            self._bar.stop()
            self._bar = None
            return
        if self.quiet:
            return
        rate = self._rows / elapsed if elapsed > 0 else 0.0
        line = f"epoch {self._epoch + 1}/{self._epochs}  loss {self._last_loss:.4f}"
        if valid:
            line += "  " + _format(valid)
        line += f"  {rate:,.0f} rows/s  {elapsed:.1f} s"
        print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)
