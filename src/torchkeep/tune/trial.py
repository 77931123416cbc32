"""One trial of a study: an ordinary torchkeep run in STUDY/trials/<number>, trained by `torchkeep.train`.

In a Ray worker, `run_trial` trains the run with the trial's settings and a TuneReporter among its
trackers: after each validation it calls `ray.tune.report(metrics, checkpoint=...)`, where ASHA decides
whether the trial goes on. The checkpoint Ray keeps is a pointer (the run directory and step): the
weights are the run's own checkpoints, so a restored study resumes each unfinished trial with
`torchkeep.train(resume=RUN)` from its newest valid checkpoint. A trial ASHA stops is left as it was
when it reported; once the study ends, `finish_stopped` gives it a bundle from its best checkpoint.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from torchkeep.bundle import schema_from_dict, write_bundle
from torchkeep.checkpoint import Checkpointer
from torchkeep.config import RunConfig
from torchkeep.models.build import build_model
from torchkeep.run.rundir import RunDir
from torchkeep.run.train import train
from torchkeep.training.ema import ema_weights

STOPPED = "stopped early"  # run.json status of a trial the scheduler stopped


def trial_dir(study_dir: str, trial_id: str) -> str:
    """STUDY/trials/<number>: the number Ray gives the trial within its study ("..._00003" -> "003") in a random
    search; a searcher's trials (Optuna) have ids without one and keep them ("d47b2237")."""
    number = trial_id.rsplit("_", 1)[-1]
    return f"{study_dir.rstrip('/')}/trials/{f'{int(number):03d}' if '_' in trial_id and number.isdigit() else trial_id}"


class TuneReporter:
    """A Tracker: each validation event goes to Ray Tune as `valid_<metric>` plus `epoch` and `step`."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if metrics.get("split") != "valid":
            return
        from ray import tune

        values: dict[str, Any] = {f"valid_{k}": float(v) for k, v in metrics.items()
                                  if k not in ("split", "epoch") and isinstance(v, int | float)}
        values.update(epoch=int(metrics.get("epoch", 0)), step=int(step))
        with tempfile.TemporaryDirectory(prefix="torchkeep-trial-") as directory:
            Path(directory, "trial.json").write_text(json.dumps({"run_dir": self.run_dir, "step": step}))
            # Blocks until the driver has taken the result; when ASHA stops the trial it ends the thread here.
            tune.report(values, checkpoint=tune.Checkpoint.from_directory(directory))

    def close(self) -> None:
        pass


def run_trial(sampled: dict[str, Any], *, config: RunConfig, settings: dict[str, Any], data: Any, study_dir: str,
              budget: dict[str, int], threads: int, monitor: str) -> None:
    """Train (or, in a restored study, resume) one trial's run; runs inside a Ray worker. `settings`: the
    run settings every trial shares (as `torchkeep.train` keywords), `sampled` the trial's own."""
    from ray import tune

    run_dir = trial_dir(study_dir, tune.get_context().get_trial_id())
    reporter = TuneReporter(run_dir)
    run = RunDir.open(run_dir)
    if run.started:  # a restored study: the run continues from its newest valid checkpoint
        info = run.read("run.json")
        if info.get("status") != "complete":
            train(data, resume=run_dir, quiet=True, trackers=[reporter])
        elif info.get("valid"):  # it finished after Ray last saved the study's state: its result, not a re-run
            reporter.log({"split": "valid", "epoch": info.get("epochs_done", 0), **info["valid"]}, step=-1)
        return
    own = {k: (v.item() if hasattr(v, "item") else v) for k, v in sampled.items()}  # numpy scalars -> Python
    trackers = [*settings.get("trackers", config.track.trackers), reporter]
    train(data, config=config, quiet=True, **{**settings, "run_dir": run_dir, "threads": threads, "monitor": monitor,
                                              **budget, **own, "trackers": trackers})


def finish_stopped(run_dir: str, key: str, higher: bool) -> bool:
    """A trial the scheduler stopped: its bundle from its best checkpoint by `key` (valid_<metric>), and
    run.json saying so. False when there is nothing to finish (complete, or nothing trained)."""
    run = RunDir.open(run_dir)
    if not run.started or run.read("run.json").get("status") == "complete":
        return False
    checkpointer = Checkpointer(run.path, async_save=False)
    scored = [c for c in checkpointer.list() if c.status == "complete" and key in c.metrics]
    if not scored:
        return False
    best = (max if higher else min)(scored, key=lambda c: c.metrics[key])
    spec = run.read("model.json")
    model = build_model(spec["architecture"], spec["args"])
    restored = checkpointer.restore(model=model, step=best.step, restore_rng=False)
    if restored is not None and (averaged := ema_weights(restored.extra)) is not None:
        model.load_state_dict(averaged)
    write_bundle(run.storage, model=model.cpu(), architecture=spec["architecture"], model_args=spec["args"],
                 schema=schema_from_dict(run.read("schema.json")), metrics=best.metrics, prefix="bundle")
    info = run.read("run.json")
    # Stopped at its last validation (ASHA's last rung can fall there), it trained its whole budget: complete.
    trained = max(int(c.epoch or 0) for c in checkpointer.list() if c.status == "complete")
    complete = trained >= int(run.read("config.json")["train"]["epochs"])
    info.update(status="complete" if complete else STOPPED, updated_at=time.time(), best_step=best.step,
                valid={k.removeprefix("valid_"): v for k, v in best.metrics.items()})
    run.write("run.json", info)
    return True
