"""A study's report (`torchkeep report STUDY`): the monitored validation metric of every trial over training, one
PNG, from study.json and each trial's metrics.jsonl."""

from __future__ import annotations

import json

from torchkeep.errors import DataError
from torchkeep.report import plots
from torchkeep.report.summary import summarize_run
from torchkeep.report.write import Report
from torchkeep.storage import open_storage

STUDY_FILE = "study.json"


def is_study_dir(path: str) -> bool:
    return open_storage(path).exists(STUDY_FILE)


def write_study_report(study_dir: str, out: str | None = None) -> Report:
    """Writes trials_<metric>.png into `out` (default STUDY/report)."""
    storage = open_storage(study_dir)
    if not storage.exists(STUDY_FILE):
        raise DataError(f"{study_dir}: not a study directory (no {STUDY_FILE})")
    study = json.loads(storage.read(STUDY_FILE))
    monitor = study["monitor"]
    trials = []
    for row in study.get("trials", []):
        try:
            summary = summarize_run(row["run_dir"])
        except DataError:  # nothing trained: no line to draw
            continue
        trials.append((row["trial"], summary.valid, row["status"]))
    report = Report(out=out or f"{study_dir.rstrip('/')}/report")
    if not trials:
        report.notes.append("no trial has a validation yet")
        return report
    best = (study.get("best") or {}).get("trial")
    file = f"trials_{monitor}.png"
    open_storage(report.out).write(file, plots.study_metric(
        f"{study_dir.rstrip('/').rsplit('/', 1)[-1]}: validation {monitor} per trial", monitor, trials, best))
    report.files.append(f"{report.out.rstrip('/')}/{file}")
    return report
