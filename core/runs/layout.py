"""The run folder's layout: every file name and path of a run, and the rules for run ids.

The one place that knows where a run's files are; the rest of the code asks a RunLayout (a RunStore
is one) for a path, never joins names itself. Files derived from a checkpoint (evaluations, exports)
are laid out by core.runs.derived, on top of these paths.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
PROBES_FILE = "probes.jsonl"   # per-layer weight/gradient statistics (core.training.probes writes, reads it)
TENSORBOARD_DIR = "tensorboard"   # event files written by `python -m core tensorboard`
STOP_FILE = "STOP"
LOG_FILE = "train.log"
ANNOTATIONS_FILE = "annotations.json"   # a person's tags and note for the run (core.runs.annotations)
LEASE_FILE = ".lease"         # flock'ed by the process that trains the run (core.runs.lease)
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
CHECKPOINTS = ("best", "latest")      # the names a person picks between
CHANGES_FILE = ".changes"     # in the runs folder: ids of runs whose state changed (core.runs.journal)
SUMMARIES_FILE = ".summaries.json"   # in the runs folder: the summary cache, kept across restarts
RUN_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")


class RunNotFound(KeyError):
    pass


class InvalidRunId(ValueError):
    pass


def default_runs_dir() -> Path:
    return Path(os.environ.get("TRAINBOARD_RUNS", "runs"))


def check_run_id(run_id: str) -> str:
    """A run id as the store generates them; anything else (a path, '..') is refused."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidRunId(f"invalid run id {run_id!r}: expected lowercase letters, digits, '-' and '_'")
    return run_id


class RunLayout:
    """The paths of the runs folder `root` and of each run in it."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def existing_run_dir(self, run_id: str) -> Path:
        path = self.run_dir(run_id)
        if not (path / CONFIG_FILE).is_file():
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        return path

    def exists(self, run_id: str) -> bool:
        try:
            return (self.run_dir(run_id) / CONFIG_FILE).is_file()
        except InvalidRunId:
            return False

    def run_ids(self) -> list[str]:
        """Every run, newest first (ids start with their creation time)."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as entries:
            names = [e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)]
        return sorted((n for n in names if os.path.isfile(os.path.join(self.root, n, CONFIG_FILE))),
                      reverse=True)

    def config_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / CONFIG_FILE

    def status_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / STATUS_FILE

    def checkpoint_path(self, run_id: str, which: str = LATEST) -> Path:
        which = {"latest": LATEST, "best": BEST}.get(which, which)
        if which not in (LATEST, BEST):
            raise ValueError(f"checkpoint must be latest or best, got {which!r}")
        return self.run_dir(run_id) / CHECKPOINT_DIR / which

    def metrics_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / METRICS_FILE

    def probes_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / PROBES_FILE

    def tensorboard_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / TENSORBOARD_DIR

    def stop_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / STOP_FILE

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / LOG_FILE

    def lease_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / LEASE_FILE

    def annotations_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ANNOTATIONS_FILE
