"""`torchkeep tune`: a hyperparameter search on Ray Tune with ASHA; every trial a torchkeep run."""

from __future__ import annotations

import argparse
from typing import Any

from torchkeep.cli import train

EPILOG = """examples:
  torchkeep tune --trials 16 --concurrent 2 --run-dir studies/flights     # the built-in flights, default space
  torchkeep tune study.toml --data flights.csv --target late --run-dir studies/mine   # [tune.space] in the TOML
  torchkeep tune --example digits --epochs 10 --trials 8 --run-dir studies/digits    # images: budget in epochs
  torchkeep tune --resume studies/flights      # after the driver died: finished trials are kept, the rest go on
  torchkeep runs studies/flights               # the leaderboard again
  torchkeep report studies/flights             # a PNG of the metric per trial over training
  torchkeep serve studies/flights/best         # the best trial's model (evaluate, predict, export take it too)
  ray start --head; torchkeep tune --address auto ...   # trials on a Ray cluster

The search space is a [tune.space] table of the config: lr = {loguniform = [1e-4, 1e-1]},
hidden_sizes = {choice = ["256,128", "512,256"]}, dropout = {uniform = [0, 0.3]},
batch_size = {choice = [128, 512]}, ensemble_size = {randint = [1, 9]}; without one: lr, weight_decay,
dropout and hidden_sizes. [tune] also takes trials, concurrent, search, grace_period, reduction_factor,
epochs, steps, monitor, gpus_per_trial, address, seed (flags win). Data and run flags are `train`'s, the
same for every trial. Needs Ray Tune: pip install 'torchkeep[tune]'.
"""


def add_parser(commands: Any) -> None:
    holder = argparse.ArgumentParser(add_help=False).add_subparsers()
    train.add_parser(holder)
    p = commands.add_parser(
        "tune", parents=[holder.choices["train"]], conflict_handler="resolve",
        help="search hyperparameters (Ray Tune, ASHA); every trial a run, the best one ready to serve",
        description="Train --trials runs with settings sampled from the config's [tune.space], --concurrent at a"
        " time, reporting each validation to Ray Tune's ASHA scheduler, which stops the trials that fall behind."
        " The study directory holds study.json, trials/<number>/ (ordinary runs) and best (the best trial).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    study = p.add_argument_group("study")
    study.add_argument("--trials", type=int, metavar="N", help="trials sampled from the space (default 8)")
    study.add_argument("--concurrent", type=int, metavar="K",
                       help="trials at once, each with cores // K CPU threads (default 1)")
    study.add_argument("--search", choices=["random", "optuna"], help="random (default) or Optuna's TPE")
    study.add_argument("--grace-period", type=int, metavar="N",
                       help="ASHA: epochs or steps every trial gets before it can be stopped (default budget / 27)")
    study.add_argument("--reduction-factor", type=int, metavar="R",
                       help="ASHA: about 1 in R trials goes on at each rung (default 3)")
    study.add_argument("--epochs", type=int, metavar="N", help="a trial's budget in epochs (validation each epoch)")
    study.add_argument("--steps", type=int, metavar="N",
                       help="a trial's budget in optimizer steps (tables; default: a run's own, about 4,000)")
    study.add_argument("--monitor", metavar="METRIC", help="validation metric to optimize (default per task:"
                       " roc_auc, log_loss, rmse)")
    study.add_argument("--gpus-per-trial", type=float, metavar="F", help="GPUs each trial takes (default 0)")
    study.add_argument("--address", metavar="ADDR", help="join a Ray cluster (auto, HOST:6379, ray://HOST:10001);"
                       " default: a local Ray for the study")
    study.add_argument("--search-seed", type=int, metavar="N", help="seed of the sampling (default 0)")
    p.add_argument("--run-dir", metavar="DIR", help="the study directory (default studies/study-<time>)")
    p.add_argument("--resume", metavar="DIR", help="continue the study in DIR after its driver stopped")
    p.set_defaults(run=run)


STUDY_FLAGS = {"trials": "trials", "concurrent": "concurrent", "search": "search", "grace_period": "grace_period",
               "reduction_factor": "reduction_factor", "epochs": "epochs", "steps": "steps", "monitor": "monitor",
               "gpus_per_trial": "gpus_per_trial", "address": "address", "search_seed": "seed"}


def run(args: argparse.Namespace) -> int:
    from torchkeep.config import RunConfig, load_toml
    from torchkeep.errors import ConfigError
    from torchkeep.tune import tune
    from torchkeep.tune.settings import read_study_toml, study_config

    settings = train.settings(args)
    flags = {name: getattr(args, flag) for flag, name in STUDY_FLAGS.items()}
    for name in ("epochs", "monitor"):  # the study's, not a run setting
        settings.pop(name, None)
    run_dir = settings.pop("run_dir", None)
    if args.resume:
        if settings or args.config or args.target or any(v is not None for v in flags.values()):
            raise ConfigError("--resume continues a study with its saved settings; give only the study directory")
        result = tune(resume=args.resume, quiet=args.quiet)
    else:
        table = read_study_toml(args.config) if args.config else {}
        study = study_config(table, f"{args.config} [tune]" if args.config else "[tune]", **flags)
        config = load_toml(args.config) if args.config else RunConfig()
        result = tune(config=config, target=args.target, run_dir=run_dir, study=study, quiet=args.quiet, **settings)
    print(f"study: {result.study_dir}")
    if result.best is not None:
        print(f"best: trial {result.best['trial']}  {result.metric} {result.best['best']:.4f}  -> {result.best_dir}")
    print(f"next: torchkeep serve {result.best_dir} | torchkeep report {result.study_dir} | torchkeep runs {result.study_dir}")
    return 0
