"""What a study leaves: STUDY/study.json, the leaderboard (rich), and STUDY/best, the best trial's run.

study.json holds the study's settings (to restore it), and once it ends one row per trial: its number,
run directory, sampled settings, best monitored metric, epochs and steps run, and its status: complete,
stopped early (by ASHA, with a bundle from its best checkpoint) or error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchkeep.errors import DataError, StorageError
from torchkeep.report.study import STUDY_FILE, is_study_dir
from torchkeep.report.summary import summarize_run
from torchkeep.run.rundir import RunDir
from torchkeep.storage import open_storage
from torchkeep.storage.jsonfile import read_json, write_json
from torchkeep.tune.trial import STOPPED



def is_study(path: str) -> bool:
    try:
        return is_study_dir(path)
    except StorageError:
        return False


def read_study(study_dir: str) -> dict[str, Any]:
    storage = open_storage(study_dir)
    if not storage.exists(STUDY_FILE):
        raise DataError(f"{study_dir}: not a study directory (no {STUDY_FILE}); start one with torchkeep tune --run-dir")
    return read_json(storage, STUDY_FILE, study_dir)


def write_study(study_dir: str, study: dict[str, Any]) -> None:
    write_json(open_storage(study_dir), STUDY_FILE, study)


def trial_row(run_dir: str, settings: dict[str, Any], error: str | None = None) -> dict[str, Any]:
    """A trial as the leaderboard shows it, from its run directory (and Ray's error, if it failed)."""
    row: dict[str, Any] = {"trial": run_dir.rstrip("/").rsplit("/", 1)[-1], "run_dir": run_dir, "settings": settings,
                           "status": "error" if error else "not started", "best": None, "epochs": 0, "steps": 0,
                           "stopped_early": False, "error": error}
    if not RunDir.open(run_dir).started:
        return row
    try:
        summary = summarize_run(run_dir)
    except DataError:  # set up, but no metrics yet
        return row
    row.update(best=summary.best_value, epochs=summary.epochs_done, steps=summary.steps,
               status="error" if error else summary.status, stopped_early=summary.status == STOPPED)
    return row


def best_row(rows: list[dict[str, Any]], higher: bool) -> dict[str, Any] | None:
    """The trial with the best metric among those with a bundle (complete or stopped early)."""
    kept = [r for r in rows if r["best"] is not None and r["status"] in ("complete", STOPPED)]
    if not kept:
        return None
    return (max if higher else min)(kept, key=lambda r: r["best"])


def link_best(study_dir: str, best: dict[str, Any]) -> str:
    """STUDY/best: a link to the best trial's run directory (a local study), else a copy of what predict,
    serve, evaluate and export read (config, schema, model, run.json and the bundle) for an s3:// one."""
    target = f"{study_dir.rstrip('/')}/best"
    if "://" not in study_dir:
        link = Path(study_dir, "best")
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(best["run_dir"], study_dir) if "://" not in best["run_dir"]
                        else best["run_dir"], target_is_directory=True)
        return target
    source, destination = open_storage(best["run_dir"]), open_storage(target)
    for key in source.list(""):
        if key.startswith("bundle/") or key in ("config.json", "schema.json", "model.json", "run.json"):
            destination.write(key, source.read(key))
    return target


def leaderboard(study: dict[str, Any]) -> Any:
    """A rich Table of the study's trials, best first."""
    from rich.table import Table

    higher = study["mode"] == "max"
    rows = sorted(study.get("trials", []), key=lambda r: (r["best"] is None, -(r["best"] or 0) if higher else r["best"] or 0))
    best = (study.get("best") or {}).get("trial")
    table = Table(title=f"study {study['study_dir']}: {study['metric']} ({study['mode']}), {len(rows)} trial(s)")
    for column in ("trial", "settings", study["metric"], "epochs", "steps", "status"):
        table.add_column(column, justify="right" if column in ("epochs", "steps", study["metric"]) else "left")
    for r in rows:
        settings = ", ".join(f"{k}={_short(v)}" for k, v in sorted(r["settings"].items()))
        value = "" if r["best"] is None else f"{r['best']:.4f}"
        status = r["status"] + (f": {r['error']}" if r.get("error") else "")
        table.add_row(("* " if r["trial"] == best else "") + r["trial"], settings, value, str(r["epochs"]),
                      str(r["steps"]), status)
    return table


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)
