"""`torchkeep evaluate RUN_DIR --data PATH`: metrics of a trained model on a labelled table."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser("evaluate", help="metrics of a run's model on a labelled table",
                            description="Score a run (or bundle) on a table that has the target column.")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:N, auto")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a bundle")
    p.add_argument("--data", required=True, metavar="PATH", help="table (.csv or .parquet) with the target column; for a model"
                   " trained with torchkeep.fit, a .npz or .safetensors file of its inputs and a 'target' array")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--image-dir", metavar="DIR", help="image runs: folder a CSV's file names are relative to"
                   " (default: the CSV's folder); --data may also be a folder of class folders or idx files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torchkeep

    predictor = torchkeep.load(args.run_dir, device=args.device)
    metrics = predictor.evaluate(args.data, image_dir=args.image_dir)
    if args.json:
        print(json.dumps(metrics))
    else:
        for name, value in metrics.items():
            print(f"{name:<10} {value:.6f}")
    return 0
