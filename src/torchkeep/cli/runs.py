"""`torchkeep runs [DIR]`: a table of the runs in a directory (default `runs`)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("runs", help="list the runs in a directory: task, best metric, epochs, processes, status, when",
                            description="Every run directly under DIR (a directory with run.json), oldest first."
                            " The metric is the one the run monitors (the one it ended with when complete).")
    p.add_argument("root", nargs="?", default="runs", metavar="DIR", help="default: runs; a study directory of"
                   " `torchkeep tune`: its leaderboard")
    p.add_argument("--json", action="store_true", help="print one JSON object per run")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchkeep.report.summary import duration, list_runs, when
    from torchkeep.tune.results import is_study, leaderboard, read_study

    if is_study(args.root):  # a study of `torchkeep tune`: its leaderboard
        study = read_study(args.root)
        if args.json:
            for row in study.get("trials", []):
                print(json.dumps(row))
            return 0
        from rich.console import Console

        Console().print(leaderboard(study) if study.get("trials") else f"{args.root}: a study that has not ended"
                        " (continue it with torchkeep tune --resume)")
        return 0

    runs = list_runs(args.root)
    if args.json:
        for r in runs:
            print(json.dumps({"run_dir": r.run_dir, "name": r.name, "task": r.task, "status": r.status,
                              "monitor": r.monitor, "value": r.best_value, "epochs_done": r.epochs_done,
                              "epochs": r.epochs, "created_at": r.created_at, "seconds": r.seconds,
                              "world_size": r.world_size, "strategy": r.strategy}))
        return 0
    if not runs:
        print(f"{args.root}: no runs")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"runs in {args.root}")
    for column in ("name", "task", "metric", "epochs", "processes", "status", "when", "time"):
        table.add_column(column, justify="right" if column in ("epochs", "time") else "left")
    for r in runs:
        value = r.best_value
        metric = "" if value is None else f"{r.monitor} {value:.4f}"
        epochs = f"{r.epochs_done}/{r.epochs}" if r.epochs else str(r.epochs_done)
        processes = f"{r.world_size} {r.strategy}" if r.strategy else str(r.world_size)
        table.add_row(r.name, r.task or "", metric, epochs, processes, r.status, when(r.created_at), duration(r.seconds))
    Console().print(table)
    return 0
