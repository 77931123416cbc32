"""A run told from its files: run.json, config.json, schema.json and metrics.jsonl (no model loaded)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchkeep.errors import DataError, StorageError
from torchkeep.storage import Storage, open_storage
from torchkeep.track.events import best_validation, metric_names, monitor_of

METRICS_FILE = "metrics.jsonl"


@dataclass
class RunSummary:
    run_dir: str
    name: str
    status: str
    config: dict[str, Any]
    task: str | None = None
    target: str | None = None
    created_at: float | None = None
    seconds: float | None = None  # wall clock of training, summed over resumes
    monitor: str = "loss"
    higher: bool = False
    train: list[dict[str, Any]] = field(default_factory=list)  # train events by step (a resume's repeats dropped)
    valid: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)  # run.json: the metrics the run ended with
    columns: list[str] = field(default_factory=list)  # schema.json notes: columns dropped or re-read, and why
    world_size: int = 1  # processes of its last training session (run.json)
    strategy: str | None = None  # ddp | fsdp with more than one process

    @property
    def epochs(self) -> int | None:
        return (self.config.get("train") or {}).get("epochs")

    @property
    def epochs_done(self) -> int:
        # Validation runs at every epoch end, where its event's epoch is the count of finished epochs.
        return max((int(e.get("epoch", 0)) for e in self.valid), default=0)

    @property
    def steps(self) -> int:
        return max((int(e["step"]) for e in self.train + self.valid), default=0)

    @property
    def best(self) -> dict[str, Any] | None:
        return best_validation(self.valid, self.monitor, self.higher)

    @property
    def best_value(self) -> float | None:
        """The monitored metric the run ended with (run.json), else the best one logged so far."""
        if self.monitor in self.final:
            return self.final[self.monitor]
        best = self.best
        return None if best is None else best[self.monitor]


def read_json(storage: Storage, key: str) -> Any:
    """A JSON file of a run, or None when it is absent or unreadable (listing must not stop on one bad run)."""
    try:
        return json.loads(storage.read(key))
    except (StorageError, ValueError):
        return None


def read_metrics(storage: Storage, run_dir: str) -> list[dict[str, Any]]:
    """The events of metrics.jsonl; a missing or empty file is a DataError that says why."""
    if not storage.exists(METRICS_FILE):
        raise DataError(f"{run_dir}: no {METRICS_FILE} (not a torchkeep run directory, or training never started)")
    lines = bytes(storage.read(METRICS_FILE)).decode("utf-8", errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # the half-written last line of a killed run
                break
            raise DataError(f"{run_dir}/{METRICS_FILE} line {number}: not JSON ({line[:60]!r})") from None
    if not records:
        raise DataError(f"{run_dir}/{METRICS_FILE} is empty: the run has logged nothing yet (it logs every"
                        " log_every_steps optimizer steps and at each validation)")
    return records


def _by_step(records: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    # A resumed run logs again the steps after its last checkpoint: the later record of a step wins.
    latest = {int(r["step"]): r for r in records if r.get("split") == split and "step" in r}
    return [latest[step] for step in sorted(latest)]


def summarize_run(run_dir: str, *, require_metrics: bool = True) -> RunSummary:
    storage = open_storage(run_dir)
    run = read_json(storage, "run.json") or {}
    config = read_json(storage, "config.json") or {}
    schema = read_json(storage, "schema.json") or {}
    try:
        records = read_metrics(storage, run_dir)
    except DataError:
        if require_metrics:
            raise
        records = []
    monitor, higher = monitor_of(config)
    target = schema.get("target") or {}
    return RunSummary(
        run_dir=run_dir, name=Path(run_dir.rstrip("/")).name, status=run.get("status", "unknown"), config=config,
        task=target.get("task") or (config.get("data") or {}).get("task"), target=target.get("name"),
        created_at=run.get("created_at"), seconds=run.get("seconds"), monitor=monitor, higher=higher,
        train=_by_step(records, "train"), valid=_by_step(records, "valid"), final=run.get("valid") or {},
        columns=[f"`{n['column']}` {n['action']}: {n['reason']}" for n in schema.get("notes", [])],
        world_size=run.get("world_size") or 1, strategy=run.get("strategy"),
    )


def list_runs(root: str) -> list[RunSummary]:
    """Every run directly under `root` (a directory holding run.json), oldest first."""
    if "://" in root and not root.startswith("file://"):
        keys = open_storage(root).list()
        names = sorted({k.split("/")[0] for k in keys if k.count("/") == 1 and k.endswith("/run.json")})
    else:
        path = Path(root.removeprefix("file://"))
        if not path.is_dir():
            raise DataError(f"{root}: no such directory")
        names = sorted(p.name for p in path.iterdir() if (p / "run.json").is_file())
    runs = [summarize_run(f"{root.rstrip('/')}/{name}", require_metrics=False) for name in names]
    return sorted(runs, key=lambda r: (r.created_at or 0, r.name))


def when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp)) if timestamp else ""


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{seconds:02d}s"


def _metrics_line(event: dict[str, Any]) -> str:
    return ", ".join(f"{k} {event[k]:.4f}" for k in metric_names(event))


HIGHLIGHTS = (("data", ("path", "example", "target", "valid_path", "valid_fraction")),
              ("model", ("hidden_sizes", "dropout")),
              ("train", ("epochs", "batch_size", "seed", "monitor", "early_stopping_patience", "log_every_steps")),
              ("optim", ("optimizer", "lr", "schedule", "weight_decay")),
              ("track", ("trackers",)))


def config_highlights(config: dict[str, Any]) -> list[tuple[str, Any]]:
    sections = {**config, "optim": (config.get("train") or {}).get("optim") or {}}
    return [(f"{section}.{key}", sections[section][key]) for section, keys in HIGHLIGHTS
            for key in keys if (sections.get(section) or {}).get(key) not in (None, [])]


def summary_markdown(summary: RunSummary, images: list[tuple[str, str]], notes: list[str]) -> str:
    """summary.md: what the run is, how it went (best and last validation), its settings and plots."""
    s = summary
    lines = [f"# {s.name}", "", "| | |", "|---|---|", f"| status | {s.status} |"]
    if s.task:
        lines.append(f"| task | {s.task} (target `{s.target}`) |")
    lines += [f"| started | {when(s.created_at)} |", f"| run time | {duration(s.seconds)} |",
              f"| progress | {s.steps} optimizer steps, {s.epochs_done} of {s.epochs} epochs |", ""]
    best = s.best
    lines += ["## Validation", ""]
    if best is None:
        lines += ["No validation was logged.", ""]
    else:
        way = "higher" if s.higher else "lower"
        last = s.valid[-1]
        lines += [f"- best ({s.monitor}, {way} is better): **{s.monitor} {best[s.monitor]:.4f}** at step"
                  f" {best['step']}, epoch {best.get('epoch', '?')} — {_metrics_line(best)}",
                  f"- last: step {last['step']}, epoch {last.get('epoch', '?')} — {_metrics_line(last)}"]
        if s.final:
            lines.append("- the run ended with: " + ", ".join(f"{k} {v:.4f}" for k, v in s.final.items()))
        lines.append("")
    lines += ["## Settings", "", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {', '.join(map(str, value)) if isinstance(value, list) else value} |"
              for name, value in config_highlights(s.config)]
    if s.columns:
        lines += ["", "## Columns", "", "What fitting did besides encoding them:", ""] + [f"- {c}" for c in s.columns]
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({file})" for title, file in images]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"
