"""`torchkeep report RUN_DIR [--out DIR]`: PNG plots and summary.md of a run, from its metrics.jsonl."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "report", help="plot a run's loss, metrics and learning rate (PNG) and write summary.md",
        description="Reads RUN_DIR/metrics.jsonl, run.json and config.json and writes loss.png, valid_<metric>.png,"
        " lr.png, throughput.png and summary.md (best epoch and metric, run time, settings). Binary runs also get"
        " roc.png and regression runs predicted_vs_actual.png, from the run's model on its validation split"
        " (rebuilt from the run's data). Needs matplotlib: pip install 'torchkeep[track]'.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run, or a study of `torchkeep tune` (one PNG: the monitored"
                   " validation metric of every trial over training)")
    p.add_argument("--out", metavar="DIR", help="where the files go (default RUN_DIR/report)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchkeep.report import write_report
    from torchkeep.report.study import is_study_dir, write_study_report

    report = (write_study_report if is_study_dir(args.run_dir) else write_report)(args.run_dir, args.out)
    for path in report.files:
        print(path)
    return 0
