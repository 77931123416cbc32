"""The `torchkeep` command. Each subcommand lives in its own module with `add_parser` and `run`.

This is the process edge: a TorchkeepError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from torchkeep.cli import (checkpoints, convert, datasets, evaluate, export, inspect, predict, report, runs, serve, train,
                           tune)
from torchkeep.errors import TorchkeepError

COMMANDS = (train, tune, evaluate, predict, export, serve, checkpoints, inspect, convert, report, runs, datasets)


def build_parser() -> argparse.ArgumentParser:
    from torchkeep.version import __version__

    parser = argparse.ArgumentParser(
        prog="torchkeep",
        description="Train, keep and serve PyTorch models on tables. Start with `torchkeep train`: it trains"
        " the built-in flights example and prints where the run went.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"torchkeep {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as typed: `train --nproc N` re-runs it in N workers
    if args.command is None:
        parser.print_help()
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    handler.setLevel(logging.WARNING)  # a run's per-rank log files take its info lines too
    logger = logging.getLogger("torchkeep")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        return args.run(args) or 0
    except TorchkeepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        message = "interrupted"
        if args.command == "train":
            message += ": the last committed checkpoint is intact; continue with --resume"
        if args.command == "tune":
            message += f": continue the study with torchkeep tune --resume {args.resume or args.run_dir or 'STUDY_DIR'}"
        print(message, file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
