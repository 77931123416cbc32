"""`torchkeep tune` against torchkeep's defaults on tables of the tabular suite, same split, same machine.

Tables: ../shared/tabular_suite.toml entries (default creditcard and hmda), loaded and split 80/20 exactly as
bench/tabular_suite.py does (its load_table). On each:

  defaults  `python -m torchkeep train --data train.parquet --target T --task TASK --threads 1 --quiet` (the
            suite's run, through tabular_suite.run_torchkeep), then `predict` on the test 20%
  tune      `python -m torchkeep tune --data train.parquet --target T --task TASK --trials N --concurrent K
            --run-dir study --quiet` (default space, ASHA, random search, each trial a default-budget run on
            cores // K threads), then `predict` with study/best on the same test 20%

Both validate on the same 10% of the training rows (the run's seeded split); the test rows are seen by neither
until `predict`. Printed side by side: the test metric (binary ROC AUC, multiclass accuracy, regression RMSE)
and the wall clock of each command (interpreter start, imports and, for tune, Ray's start included).

Run: .venv/bin/python bench/tune.py [--tables creditcard,hmda] [--trials 8] [--concurrent 2]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tabular_suite import (DEFAULT_SUITE, METRIC, last_line, load_suite, load_table, metrics,  # noqa: E402
                           run_torchkeep, sorted_labels)


def test_metrics(run_dir: Path, folder: Path, task: str, test: pd.DataFrame, target: str, mask: np.ndarray,
                 labels: list[Any] | None) -> dict[str, Any]:
    """`torchkeep predict RUN` on the test rows, scored as the suite scores them."""
    test_file, preds_file = folder / "test.parquet", folder / "preds-tune.parquet"
    test.drop(columns=[target]).to_parquet(test_file, index=False)
    done = subprocess.run([sys.executable, "-m", "torchkeep", "predict", str(run_dir), "--data", str(test_file),
                           "--out", str(preds_file)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"ok": False, "error": "predict: " + last_line(done.stderr or done.stdout)}
    preds = pd.read_parquet(preds_file)[mask].reset_index(drop=True)
    y_test = test.loc[mask, target].to_numpy()
    if task == "regression":
        return {"ok": True, **metrics(task, y_test, predicted=preds["prediction"].to_numpy())}
    if task == "binary":
        return {"ok": True, **metrics(task, y_test, labels, preds[f"probability_{labels[1]}"].to_numpy())}
    probability = preds[[f"probability_{label}" for label in labels]].to_numpy(dtype=float)
    return {"ok": True, **metrics(task, y_test, labels, probability, preds["prediction"].astype(str).to_numpy())}


def run_study(spec: dict[str, Any], train: pd.DataFrame, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "torchkeep", "tune", "--data", str(folder / "train.parquet"), "--target",
               spec["target"], "--task", spec["task"], "--trials", str(args.trials), "--concurrent",
               str(args.concurrent), "--run-dir", str(folder / "study"), "--quiet"]
    if spec.get("categorical"):
        command += ["--categorical", ",".join(spec["categorical"])]
    train.to_parquet(folder / "train.parquet", index=False)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"ok": False, "error": last_line(done.stderr or done.stdout), "seconds": seconds}
    study = json.loads((folder / "study" / "study.json").read_text())
    return {"ok": True, "seconds": seconds, "command": shlex.join(command), "best": study["best"],
            "stopped_early": study["stopped_early"], "trials": len(study["trials"]),
            "steps": sum(t["steps"] for t in study["trials"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", default="creditcard,hmda")
    parser.add_argument("--suite", default=str(DEFAULT_SUITE))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--out", default=None, help="results.json here (default: print only)")
    args = parser.parse_args()
    suite = {spec["name"]: spec for spec in load_suite(args.suite)}
    run_args = argparse.Namespace(threads=1, torchkeep_args="", timeout=3600)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as work:
        for name in args.tables.split(","):
            spec, target, task = suite[name], suite[name]["target"], suite[name]["task"]
            train, test = load_table(spec)
            mask = test[target].notna().to_numpy()
            labels = None if task == "regression" else sorted_labels(train[target])
            folder = Path(work) / name
            folder.mkdir()
            print(f"{name}: defaults ...", flush=True)
            default = run_torchkeep(spec, train, test, test.loc[mask, target].to_numpy(), labels, mask, run_args,
                                    Path(work) / "defaults")
            print(f"{name}: tune, {args.trials} trials, {args.concurrent} at once ...", flush=True)
            study = run_study(spec, train, folder, args)
            if study["ok"]:
                study |= test_metrics(folder / "study" / "best", folder, task, test, target, mask, labels)
            rows.append({"table": name, "task": task, "metric": METRIC[task], "rows": len(train) + len(test),
                         "defaults": default, "tune": study})
    print()
    print(f"{'table':<12} {'metric':<8} {'defaults':>9} {'tune best':>9} {'defaults s':>10} {'tune s':>8}  trials (stopped early)")
    for row in rows:
        metric, default, study = row["metric"], row["defaults"], row["tune"]
        ours = f"{study[metric]:.4f}" if study.get("ok") else "error"
        theirs = f"{default[metric]:.4f}" if default.get("ok") else "error"
        print(f"{row['table']:<12} {metric:<8} {theirs:>9} {ours:>9} {default['seconds']:>10.1f} {study['seconds']:>8.1f}"
              f"  {study.get('trials', 0)} ({study.get('stopped_early', 0)})"
              + (f"  {study.get('error') or default.get('error')}" if not (study.get("ok") and default.get("ok")) else ""))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
