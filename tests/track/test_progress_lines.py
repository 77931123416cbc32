"""Progress where no terminal is attached (CI, a pipe, a log file): one plain line per epoch with the
loss, the validation metrics, rows/s and seconds; nothing at all when quiet."""

from __future__ import annotations

import io
import re

import torch
from torch import nn

import torchkeep
from torchkeep.training.loop import fit
from torchkeep.training.metrics import binary_metrics
from torchkeep.training.progress import Progress

LINE = re.compile(r"^epoch (\d)/3  loss \d\.\d{4}  valid_accuracy \d\.\d{4}  valid_roc_auc \d\.\d{4}"
                  r"  valid_log_loss \d\.\d{4}  [\d,]+ rows/s  \d+\.\d s$")


class Logistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # fit() passes the batch's "x" by name
        return self.linear(x).squeeze(-1)


def fit_with(progress: Progress) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=generator)
    y = (x.sum(1) > 0).float()
    train = torchkeep.BatchLoader({"x": x[:240], "target": y[:240]}, 32, shuffle=True, seed=0)
    valid = torchkeep.BatchLoader({"x": x[240:], "target": y[240:]}, 60, shuffle=False)
    fit(Logistic(), nn.BCEWithLogitsLoss(), train, valid_loader=valid, metrics_fn=binary_metrics,
        config=torchkeep.TrainConfig(epochs=3, batch_size=32, log_every_steps=2), progress=progress)


def test_one_line_per_epoch_when_not_a_terminal():
    stream = io.StringIO()  # isatty() is False, like a pipe or CI log

    fit_with(Progress(stream=stream))

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert [LINE.match(line).group(1) for line in lines] == ["1", "2", "3"], lines


def test_quiet_prints_nothing():
    stream = io.StringIO()

    fit_with(Progress(stream=stream, quiet=True))

    assert stream.getvalue() == ""


def test_train_quiet_prints_nothing_on_stderr(tmp_path, capsys, make_table):
    torchkeep.train(make_table(200), target="late", epochs=2, run_dir=str(tmp_path / "run"), quiet=True)

    assert capsys.readouterr().err == ""
