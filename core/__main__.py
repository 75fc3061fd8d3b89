"""Command line: `python -m core train|lr-find|runs|show|resume|stop|delete|diagnose|tensorboard|eval|export|
predict|serve|import-data|delete-data|tag|note` on the same run store as the app.

The commands live in core/cli/, by group, each registered by its add_NAME(sub, parents) beside its handler;
this module puts them in --help's order, runs the one asked for and turns what it raises into an exit code
(core/cli/common.py lists the codes).
"""
from __future__ import annotations

import argparse
import os
import sys

from core.cli import data, results, runs, serving
from core.cli.common import EXIT_OK, EXIT_PIPE_CLOSED, EXIT_REJECTED, Rejected, runs_parent
from core.runs.layout import InvalidRunId, RunNotFound, default_runs_dir
from core.runs.status import UnreadableRun
from core.runs.store import RunStore

# The order --help lists the commands in: making runs, judging them, using their models, data, notes.
COMMANDS = (runs.add_train, runs.add_check, runs.add_lr_find, runs.add_runs, runs.add_stop, runs.add_delete,
            runs.add_show, runs.add_resume, results.add_diagnose, results.add_eval, results.add_embed,
            serving.add_export, serving.add_predict, serving.add_serve, results.add_tensorboard,
            data.add_import_data, data.add_delete_data, runs.add_tag, runs.add_note)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Trainboard from the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = [runs_parent()]
    for add_command in COMMANDS:
        add_command(sub, parents)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_REJECTED if exit_.code else EXIT_OK
    store = RunStore(args.runs if args.runs else default_runs_dir())
    try:
        code = args.func(args, store)
        sys.stdout.flush()      # a closed pipe shows here, not as a complaint at exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except Rejected as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_REJECTED
    except (RunNotFound, InvalidRunId, UnreadableRun) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return EXIT_REJECTED


def _reader_went_away() -> int:
    """`python -m core runs | head -1`: the reader closed the pipe. End quietly, as `ls | head` does:
    later writes (Python's own flush at exit included) go to /dev/null instead of raising."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass        # stdout is not a file (tests capture it): nothing is left to flush anyway
    return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
