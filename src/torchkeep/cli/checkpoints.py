"""`torchkeep checkpoints RUN_DIR`: every checkpoint with its step, epoch, validity, metrics and size."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("checkpoints", help="list a run's checkpoints and whether each is valid",
                            description="A checkpoint is complete only when its manifest is present and (with"
                            " --verify) every file matches the manifest's size and sha256.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--verify", action="store_true", help="hash every file against its manifest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--verify-resume", action="store_true",
                   help="restore a checkpoint in a scratch copy, replay training to the next checkpoint and"
                   " report whether model and optimizer tensors match it bit for bit (exit 1 when not)")
    p.add_argument("--from-step", type=int, metavar="STEP", help="with --verify-resume: start here (default: the"
                   " second newest checkpoint)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from torchkeep.checkpoint.format import list_checkpoints
    from torchkeep.training.metrics import for_display
    from torchkeep.errors import DataError
    from torchkeep.storage import open_storage

    if "://" not in args.run_dir and not Path(args.run_dir).is_dir():
        raise DataError(f"{args.run_dir}: no such run directory")
    if args.verify_resume:
        from torchkeep.run.verify import verify_resume

        report = verify_resume(args.run_dir, args.from_step)
        if args.json:
            print(json.dumps(report))
        else:
            verdict = "identical" if report["identical"] else f"DIFFERENT ({len(report['mismatched'])} tensors: {', '.join(report['mismatched'][:5])})"
            print(f"resumed step {report['from_step']} -> replayed to step {report['to_step']}: "
                  f"{report['tensors_compared']} model and optimizer tensors {verdict}")
        return 0 if report["identical"] else 1
    infos = list_checkpoints(open_storage(args.run_dir), verify=args.verify)
    if args.json:
        print(json.dumps([asdict(i) for i in infos]))
        return 0
    if not infos:
        print(f"{args.run_dir}: no checkpoints")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoints in {args.run_dir}")
    for column in ("name", "step", "epoch", "status", "metrics", "size"):
        table.add_column(column)
    for info in infos:
        metrics = "  ".join(f"{k.removeprefix('valid_')} {v:.4f}" for k, v in for_display(info.metrics).items())
        table.add_row(info.name, str(info.step), "" if info.epoch is None else str(info.epoch), info.status,
                      metrics or info.reason, f"{info.size_bytes / 1e6:.2f} MB" if info.size_bytes else "")
    Console().print(table)
    return 0
