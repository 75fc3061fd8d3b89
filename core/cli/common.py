"""What every command of the command line shares: exit codes, Rejected, and the parent parsers for --runs
and for the options that describe a run's config.

Exit codes: 0 success, 1 the run failed, 2 rejected input (the reasons on stderr; for import-data the
whole upload refused, nothing written), 3 some files were refused and the rest done (predict;
import-data, which names each refused file and its reason on stderr), 141 the reader of the output
went away (`runs | head`), quietly.
"""
from __future__ import annotations

import argparse

from core.config import DATASETS, SETTINGS

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_REFUSED_FILES = 0, 1, 2, 3
EXIT_PIPE_CLOSED = 128 + 13     # what a shell reports for a program ended by SIGPIPE


class Rejected(Exception):
    """Bad input: printed to stderr, exit code 2, nothing written."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def runs_parent() -> argparse.ArgumentParser:
    """--runs, which every command takes: a parent parser for add_parser(parents=...)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--runs", default=None, help="runs folder (default: $TRAINBOARD_RUNS or ./runs)")
    return common


def launch_parent() -> argparse.ArgumentParser:
    """The options that describe a run's config (train, lr-find): a parent parser; launch_config in
    core.cli.runs reads them."""
    launch = argparse.ArgumentParser(add_help=False)
    launch.add_argument("--config", metavar="FILE",
                        help="a settings file, YAML or JSON (a run's config.json works as it is); the other "
                             "options and --set override it")
    launch.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}")
    launch.add_argument("--model", help=SETTINGS["model"].rule())
    launch.add_argument("--epochs", type=int)
    launch.add_argument("--batch-size", help=SETTINGS["batch_size"].rule())
    launch.add_argument("--lr", type=float)
    launch.add_argument("--data", help="folder of images (image-folder, csv-folder)")
    launch.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any RunConfig setting, e.g. --set optimizer=sgd --set aug_flip=true")
    return launch
