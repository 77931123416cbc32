"""`torchkeep.tune`: a hyperparameter search on Ray Tune with ASHA, each trial a torchkeep run.

    tune(data, target=..., trials=8, concurrent=2, space={"lr": {"loguniform": [1e-4, 1e-1]}}, run_dir="studies/a")
    tune(resume="studies/a")        # after the driver died: finished trials stay, unfinished ones continue

The study directory holds study.json, trials/<number>/ (ordinary runs: config, metrics, checkpoints, a
bundle), best (a link to the best trial's run) and ray/ (Ray Tune's state, for `resume`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from torchkeep.config import RunConfig
from torchkeep.data.builtin import get_example
from torchkeep.data.columns import kind_of
from torchkeep.data.table_fit import target_from
from torchkeep.errors import ConfigError, DataError, TorchkeepError
from torchkeep.run import images, tables
from torchkeep.run.text import TEXT_TRAIN_DEFAULTS
from torchkeep.run.settings import override
from torchkeep.training.budget import IMAGE_EPOCHS
from torchkeep.training.metrics import DEFAULT_MONITOR, HIGHER_IS_BETTER
from torchkeep.training.progress import Progress
from torchkeep.tune.cluster import import_ray, ray_session
from torchkeep.tune.results import best_row, is_study, leaderboard, link_best, read_study, trial_row, write_study
from torchkeep.tune.settings import StudyConfig, study_config
from torchkeep.tune.space import Dimension, parse_space, to_ray
from torchkeep.tune.trial import finish_stopped, run_trial, trial_dir

TASK_METRICS = {"binary": ("loss", "accuracy", "roc_auc", "log_loss"), "multiclass": ("loss", "accuracy", "log_loss"),
                "regression": ("loss", "rmse", "mae", "r2")}
PATH_SETTINGS = ("path", "valid_path", "image_dir", "tokenizer", "embeddings", "init_from")
STUDY_KEYWORDS = {f.name for f in dataclasses.fields(StudyConfig)} - {"seed"} | {"search_seed"}


@dataclass
class StudyResult:
    study_dir: str
    metric: str  # valid_<monitor>
    mode: str  # "min" | "max"
    trials: list[dict[str, Any]]  # the leaderboard rows (see results.trial_row)
    best: dict[str, Any] | None  # the best row
    best_dir: str  # STUDY/best: evaluate, predict, serve, export and --init-from take it


def tune(data: Any = None, *, target: str | None = None, config: RunConfig | None = None, run_dir: str | None = None,
         resume: str | None = None, quiet: bool = False, study: StudyConfig | None = None, **settings: Any) -> StudyResult:
    """Search hyperparameters: `trials` runs with settings sampled from `space`, ASHA stopping the poor ones.

    Study keywords: trials, concurrent, search ("random" | "optuna"), grace_period, reduction_factor, epochs or
    steps (a trial's most), monitor, gpus_per_trial, address, search_seed, space (as `[tune.space]`: a dict
    of name -> {"loguniform": [low, high]} ...). Every other keyword is a run setting, as `torchkeep.train`
    takes it, the same for every trial. `resume`: continue the study in that directory (the data again when
    it was a frame).
    """
    progress = Progress(quiet=quiet)
    if resume is not None:
        if settings or config is not None or target is not None or study is not None:
            raise ConfigError(f"{resume}: a resumed study keeps its saved settings; give only resume= (and the data"
                              " when it was a frame)")
        return _resume(resume, data, progress, quiet)
    study_keywords = {k: settings.pop(k) for k in list(settings) if k in STUDY_KEYWORDS}
    if "search_seed" in study_keywords:
        study_keywords["seed"] = study_keywords.pop("search_seed")
    study = dataclasses.replace(study, **study_keywords) if study else study_config({}, **study_keywords)
    config = config or RunConfig()
    if target is not None:
        settings["target"] = target
    override(config, {k: v for k, v in settings.items() if k != "run_dir"})  # unknown names: one line, now
    study_dir = os.path.abspath(run_dir) if run_dir and "://" not in run_dir else run_dir
    if study_dir is None:
        study_dir = os.path.abspath(f"studies/study-{time.strftime('%Y%m%d-%H%M%S')}")
    if is_study(study_dir):
        raise ConfigError(f"{study_dir}: a study is there already; continue it with torchkeep tune --resume"
                          f" {study_dir} or choose another --run-dir")
    resolved = override(config, settings)
    image_data = images.is_image_data(resolved, data)
    dimensions = parse_space(study.space, images=image_data)
    if image_data and study.steps is not None:
        raise ConfigError("an image study's budget is --epochs per trial; --steps is for tables")
    if study.epochs is None and study.steps is None and (image_data or _has_text(resolved, data)):
        # Image and text runs count epochs, not the table budget's steps: their own default, at most.
        study = dataclasses.replace(study, epochs=IMAGE_EPOCHS if image_data else TEXT_TRAIN_DEFAULTS["epochs"])
    monitor, mode = _monitor(study.monitor, _task(config, settings, data, image_data))
    import_ray(study.search)
    if isinstance(data, str) and "://" not in data:
        data = os.path.abspath(data)
    # A trial's checkpoints are written before its validation is reported, where ASHA may end it: synchronously.
    settings.setdefault("async_save", False)
    for name in PATH_SETTINGS:  # trials run in other processes (and machines): no working directory to lean on
        if isinstance(settings.get(name), str) and "://" not in settings[name]:
            settings[name] = os.path.abspath(settings[name])
    budget = study.budget()
    spec = {"format": "torchkeep.study", "study_dir": study_dir, "status": "running", "created_at": time.time(),
            "metric": f"valid_{monitor}", "monitor": monitor, "mode": mode, "unit": study.unit, "budget": budget,
            "grace_period": study.grace(budget), "reduction_factor": study.reduction_factor,
            "search": study.search, "trials_requested": study.trials, "concurrent": study.concurrent,
            "threads_per_trial": study.threads(), "gpus_per_trial": study.gpus_per_trial, "address": study.address,
            "search_seed": study.seed, "space": [d.describe() for d in dimensions], "space_table": study.space or None,
            "data": data if isinstance(data, str) else None, "run_settings": _plain(settings),
            "run_config": config.to_dict(), "explicit": sorted(config.explicit)}
    write_study(study_dir, spec)
    progress.message(f"study {study_dir}: {study.trials} trial(s), {study.concurrent} at once with"
                     f" {spec['threads_per_trial']} thread(s) each; {study.search} search over"
                     f" {'; '.join(spec['space'])}")
    progress.message(f"ASHA on {spec['metric']} ({mode}): up to {budget} {study.unit}s a trial, grace period"
                     f" {spec['grace_period']}, reduction factor {study.reduction_factor}")
    return _run(spec, data, dimensions, progress, quiet, restore=False)


def _resume(study_dir: str, data: Any, progress: Progress, quiet: bool) -> StudyResult:
    spec = read_study(study_dir)
    if data is None and spec["data"] is not None:
        data = spec["data"]
    import_ray(spec["search"])
    progress.message(f"resuming study {study_dir}: finished trials are kept, unfinished ones continue from their"
                     " newest checkpoint")
    return _run(spec, data, [], progress, quiet, restore=True)


def _run(spec: dict[str, Any], data: Any, dimensions: list[Dimension], progress: Progress, quiet: bool,
         *, restore: bool) -> StudyResult:
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    study_dir, started = spec["study_dir"], time.time()
    config = dataclasses.replace(RunConfig.from_dict(spec["run_config"]), explicit=frozenset(spec["explicit"]))
    budget = {"epochs" if spec["unit"] == "epoch" else "steps": spec["budget"]}
    trainable = ray_tune.with_resources(
        ray_tune.with_parameters(run_trial, config=config, settings=spec["run_settings"], data=data, study_dir=study_dir, budget=budget,
                                 threads=spec["threads_per_trial"], monitor=spec["monitor"]),
        {"cpu": spec["threads_per_trial"], "gpu": spec["gpus_per_trial"]})
    ray_state = _ray_state_dir(study_dir)
    with ray_session(study_dir, address=spec["address"], gpus=spec["gpus_per_trial"], message=progress.message):
        if restore:
            tuner = ray_tune.Tuner.restore(os.path.join(ray_state, "ray"), trainable, resume_unfinished=True,
                                           resume_errored=True)
        else:
            if spec["search"] == "optuna":
                from ray.tune.search.optuna import OptunaSearch

                search: Any = OptunaSearch(seed=spec["search_seed"])
            else:
                search = BasicVariantGenerator(random_state=spec["search_seed"], max_concurrent=spec["concurrent"])
            # Rungs below the budget only (max_t one less, stop_last_trials off): a trial that reaches its budget
            # ends by itself, writing its bundle, and is never stopped at its last validation for being at max_t.
            scheduler = ASHAScheduler(time_attr=spec["unit"], max_t=max(spec["grace_period"], spec["budget"] - 1),
                                      grace_period=spec["grace_period"], reduction_factor=spec["reduction_factor"],
                                      stop_last_trials=False)
            tuner = ray_tune.Tuner(
                trainable, param_space=to_ray(dimensions),
                tune_config=ray_tune.TuneConfig(metric=spec["metric"], mode=spec["mode"], num_samples=spec["trials_requested"],
                                                scheduler=scheduler, search_alg=search,
                                                max_concurrent_trials=spec["concurrent"], reuse_actors=True),
                run_config=ray_tune.RunConfig(name="ray", storage_path=ray_state, verbose=0,
                                              checkpoint_config=ray_tune.CheckpointConfig(num_to_keep=2)))
        grid = tuner.fit()
        if grid.num_terminated + grid.num_errors < len(grid) or len(grid) < spec["trials_requested"]:
            # Interrupted (Ctrl-C: Ray Tune saves its state and returns): the study goes on with --resume.
            write_study(study_dir, {**spec, "status": "interrupted"})
            raise KeyboardInterrupt
        outcomes = [(trial_dir(study_dir, _trial_id(result)), result.config or {}, result.error) for result in grid]
    higher = spec["mode"] == "max"
    rows = []
    for run_dir, sampled, error in sorted(outcomes):
        if error is None:
            finish_stopped(run_dir, spec["metric"], higher)
        rows.append(trial_row(run_dir, _plain(sampled), None if error is None else _one_line(error)))
    best = best_row(rows, higher)
    if best is None:
        errors = [r["error"] for r in rows if r["error"]]
        raise (ConfigError if errors else DataError)(
            f"study {study_dir}: no trial trained" + (f": {errors[0]}" if errors else ""))
    spec.update(status="complete", trials=rows, best={"trial": best["trial"], "run_dir": best["run_dir"],
                                                        "value": best["best"], "settings": best["settings"]},
                seconds=spec.get("seconds", 0) + time.time() - started,
                stopped_early=sum(r["stopped_early"] for r in rows))
    best_dir = link_best(study_dir, best)
    write_study(study_dir, spec)
    if not quiet:
        from rich.console import Console

        Console().print(leaderboard(spec))
    return StudyResult(study_dir=study_dir, metric=spec["metric"], mode=spec["mode"], trials=rows, best=best,
                       best_dir=best_dir)


def _trial_id(result: Any) -> str:
    """The trial's id ("<experiment>_<number>") from a Ray Result: its metrics, else its path's name."""
    trial_id = (result.metrics or {}).get("trial_id")
    if trial_id:
        return str(trial_id)
    found = re.search(r"_([0-9a-f]+_\d{5}|[0-9a-f]{8})(_|$)", os.path.basename(result.path))
    assert found is not None, result.path
    return found.group(1)


def _ray_state_dir(study_dir: str) -> str:
    """Where Ray Tune keeps the study's state (STUDY/ray): the study directory, or for an s3:// study a local
    folder named after it under .torchkeep-tune/ in the working directory."""
    if "://" not in study_dir:
        return study_dir
    return os.path.abspath(os.path.join(".torchkeep-tune", study_dir.split("://", 1)[1].strip("/").replace("/", "-")))


def _has_text(config: RunConfig, data: Any) -> bool:
    """Whether the trials are text runs: text columns named, or the built-in example's."""
    if config.data.text_columns:
        return True
    return data is None and config.data.path is None and bool(get_example(config.data.example or "flights").text_columns)


def _task(config: RunConfig, settings: dict[str, Any], data: Any, image_data: bool) -> str | None:
    """The task the trials will have, where it is cheap to know before training: None when not."""
    resolved = override(config, {k: v for k, v in settings.items() if k != "run_dir"})
    if resolved.data.task:
        return resolved.data.task
    if image_data:
        return "multiclass"
    path = data if isinstance(data, str) else resolved.data.path if data is None else None
    if data is None and path is None:
        return get_example(resolved.data.example or "flights").task
    if path is not None and not path.endswith((".csv", ".parquet")):
        return None  # a parquet dataset (folder, glob, prefix): the first trial reads it
    frame, _, resolved = tables.load_data(resolved, data)
    target = resolved.data.target
    if target is None:
        raise ConfigError("no target column: pass --target COLUMN (or target= in Python, [data] target in TOML)")
    if target not in frame.columns:
        raise DataError(f"{path or 'data'}: no target column '{target}' (columns: {', '.join(frame.columns)})")
    column = frame[target].drop_nulls()
    kind = kind_of(column.dtype)
    if kind is None:
        return None
    levels = column.unique().sort().to_list()
    return target_from(target, kind, column.dtype, levels, 0.0, 1.0, None, "data").task if len(levels) > 1 else None


def _monitor(monitor: str | None, task: str | None) -> tuple[str, str]:
    """(metric, mode) of the study: the task's monitor unless one is given, checked against what the task logs."""
    if task is not None and monitor is not None and monitor not in TASK_METRICS[task]:
        raise ConfigError(f"--monitor {monitor}: a {task} run does not produce it; its validation metrics are"
                          f" {', '.join(TASK_METRICS[task])}")
    if monitor is None:
        if task is None:
            raise ConfigError("the study cannot tell the task before training; give --monitor (e.g. roc_auc,"
                              " log_loss or rmse) or --task")
        return DEFAULT_MONITOR[task]
    return monitor, "max" if monitor in HIGHER_IS_BETTER else "min"


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def _one_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, TorchkeepError):
        return str(cause)
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
