"""The run store: one folder per run (config, status, metrics stream, checkpoints), written atomically.

This module is the one place that knows file names and layout; everything else goes through it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import ConfigError, RunConfig, read_config_values
from core.states import (ACTIVE_STATES, CREATED, UNREADABLE, WRITTEN_STATES, check_transition,
                         effective_state, owner_gone)

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "STOP"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
CHECKPOINTS = ("best", "latest")      # the names a person picks between
EVAL_SPLITS = ("val", "test")         # the splits a checkpoint is evaluated on

STATUS_SCHEMA_VERSION = 2     # 1: status.json before the version was written
EVAL_DIR = "eval"
QUANTIZE_KINDS = ("dynamic", "static")   # int8 exports: weights only, or weights and activations
EXPORT_FILES = {"onnx": "model.onnx", "onnx-int8-dynamic": "model.int8.onnx",
                "onnx-int8-static": "model.int8-static.onnx", "torchscript": "model.ts.pt",
                "report": "export.json"}
# What predict / serve can run a run's model with, and the export file each reads (None: best.pt).
SERVING_BACKENDS = {"torch": None, "onnx": "onnx", "onnx-int8": "onnx-int8-static"}
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


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write to a temp file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)   # mkstemp makes 0600; run files are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, value, fsync: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode(), fsync=fsync)


class UnreadableRun(ValueError):
    """A run folder whose config.json or status.json cannot be understood; the message says why."""


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    state: str
    dataset: str
    model: str
    epoch: int
    epochs: int
    progress: float
    best_metric: str | None
    best_value: float | None
    created_at: float
    duration_s: float | None
    error: str | None
    notes: tuple[str, ...] = ()      # what a reader should know: settings this version does not know

    @property
    def label(self) -> str:
        """How a person tells runs apart in a picker; no state in it, so it holds still while a run trains."""
        return f"{self.name} · {self.run_id}" if self.name else self.run_id


# status.json: the keys every reader may rely on, their defaults when an older file lacks them, and
# what their values must be. Other keys (classes, last_val, ...) are kept as they are.
_NUMBER = (int, float)
STATUS_FIELDS: dict[str, tuple] = {
    "epoch": (0, int), "step": (0, int), "total_steps": (None, int),
    "created_at": (None, _NUMBER), "started_at": (None, _NUMBER), "ended_at": (None, _NUMBER),
    "heartbeat": (None, _NUMBER), "best": (None, dict), "error": (None, str), "pid": (None, int),
    "host": (None, str),
}


def parse_status(value) -> dict:
    """A status.json object of any version, with defaults for missing keys; UnreadableRun says what
    is wrong with one that cannot be understood."""
    if not isinstance(value, dict):
        raise UnreadableRun(f"status.json must hold a JSON object, got {type(value).__name__}")
    state = value.get("state")
    if state not in WRITTEN_STATES:
        raise UnreadableRun(f"status.json has an unknown state {state!r}")
    status = dict(value)
    for key, (default, kind) in STATUS_FIELDS.items():
        item = status.setdefault(key, default)
        if item is not None and (isinstance(item, bool) or not isinstance(item, kind)):
            raise UnreadableRun(f"status.json: {key} has the wrong type ({item!r})")
    best = status["best"]
    if best is not None and not (isinstance(best.get("value"), _NUMBER) and isinstance(best.get("metric"), str)):
        raise UnreadableRun(f"status.json: best must hold a metric and a value, got {best!r}")
    return status


def _fingerprint(path: Path):
    """Changes whenever the file is replaced (a new inode) or rewritten."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class MetricsReader:
    """Reads metrics.jsonl incrementally from a byte offset; a partial last line waits for the next
    read (the writer may be mid-line), like TensorBoard's event reader."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self.offset:        # the file was truncated (a resume dropped lines)
                    self.offset = 0
                    return [{"__reset__": True}] + self.read_new()
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue   # a torn line left by a crash; the resume drops it from the file
        return rows


class MetricsWriter:
    """Appends one JSON object per line, flushed at once; fsync on demand (epoch ends)."""

    def __init__(self, path: Path):
        self.handle = open(path, "ab", buffering=0)

    def write(self, row: dict) -> None:
        self.handle.write((json.dumps(row, separators=(",", ":")) + "\n").encode())

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        if not self.handle.closed:
            self.sync()
            self.handle.close()


def read_jsonl_lines(path: Path) -> list[dict]:
    return MetricsReader(path).read_new()


def truncate_metrics(path: Path, keep_until_step: int | None) -> int:
    """Drop a torn last line, and lines past `keep_until_step` (work lost with the crashed process).
    Returns how many lines were dropped. Atomic: a crash here leaves the old file or the new one."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    kept, dropped = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if keep_until_step is not None and row.get("step", 0) > keep_until_step:
            dropped += 1
            continue
        kept.append(line)
    new = b"".join(line + b"\n" for line in kept)
    if new != data:
        atomic_write_bytes(path, new)
    return dropped


class RunStore:
    """The runs folder. Thread-safe: every write is atomic or append-only, and the summary cache is
    guarded by a lock. Every path of a run folder is built here."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()
        # run_id -> (fingerprint of config.json and status.json, RunSummary): a finished run's
        # files are read once, then only stat()ed, so thousands of runs stay cheap to list.
        self._summaries: dict[str, tuple[tuple, RunSummary]] = {}
        self._lock = threading.Lock()

    # --- paths ---------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        return self.root / check_run_id(run_id)

    def existing_run_dir(self, run_id: str) -> Path:
        path = self.run_dir(run_id)
        if not (path / CONFIG_FILE).is_file():
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        return path

    def checkpoint_path(self, run_id: str, which: str = LATEST) -> Path:
        which = {"latest": LATEST, "best": BEST}.get(which, which)
        if which not in (LATEST, BEST):
            raise ValueError(f"checkpoint must be latest or best, got {which!r}")
        return self.run_dir(run_id) / CHECKPOINT_DIR / which

    def metrics_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / METRICS_FILE

    def stop_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / STOP_FILE

    def log_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / LOG_FILE

    def eval_dir(self, run_id: str, checkpoint: str, split: str) -> Path:
        """Where the predictions and report of a checkpoint on a split are cached."""
        if checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
        if split not in EVAL_SPLITS:
            raise ValueError(f"split must be one of {', '.join(EVAL_SPLITS)}, got {split!r}")
        return self.run_dir(run_id) / EVAL_DIR / f"{checkpoint}-{split}"

    def export_path(self, run_id: str, kind: str) -> Path:
        """An exported model or the export report: kind is one of EXPORT_FILES."""
        if kind not in EXPORT_FILES:
            raise ValueError(f"export kind must be one of {', '.join(EXPORT_FILES)}, got {kind!r}")
        return self.run_dir(run_id) / EXPORT_FILES[kind]

    # --- create / read / write ----------------------------------------------------------------
    def new_run_id(self, config: RunConfig) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", (config.name or f"{config.dataset}-{config.model}").lower())
        slug = slug.strip("-")[:40] or "run"
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"

    def create_run(self, config: RunConfig) -> str:
        """Write config.json and a 'created' status.json; the config must already be valid."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = self.new_run_id(config)
            try:
                (self.root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        path = self.root / run_id
        (path / CHECKPOINT_DIR).mkdir()
        # status.json first: config.json is what makes the folder a run, so no reader sees a run
        # without a status.
        self.write_status(run_id, {"state": CREATED, "epoch": 0, "step": 0, "total_steps": None,
                                   "created_at": time.time(), "started_at": None, "ended_at": None,
                                   "heartbeat": None, "best": None, "error": None})
        atomic_write_bytes(path / CONFIG_FILE, config.to_json().encode())
        return run_id

    def read_config_with_unknown(self, run_id: str) -> tuple[RunConfig, dict]:
        """(config, settings this version does not know); UnreadableRun when it cannot be parsed."""
        path = self.existing_run_dir(run_id) / CONFIG_FILE
        try:
            return read_config_values(json.loads(path.read_bytes()))
        except (ValueError, TypeError, UnicodeDecodeError) as error:   # JSON, ConfigError
            reason = "; ".join(error.problems) if isinstance(error, ConfigError) else str(error)
            raise UnreadableRun(f"config.json cannot be read: {reason}") from None

    def read_config(self, run_id: str) -> RunConfig:
        """The run's config, read tolerantly (unknown settings aside, missing ones defaulted)."""
        return self.read_config_with_unknown(run_id)[0]

    def runnable_config(self, run_id: str) -> RunConfig:
        """The run's config when it can be trained as it is; UnreadableRun lists every problem."""
        config = self.read_config(run_id)
        problems = config.validate()
        if problems:
            raise UnreadableRun("config.json: " + "; ".join(problems))
        return config

    def read_status(self, run_id: str) -> dict:
        """status.json with defaults and the effective state (stale 'running' -> 'interrupted'); a
        status that cannot be understood reads as state 'unreadable' with the reason in 'error'."""
        try:
            status = parse_status(self.read_raw_status(run_id))
        except UnreadableRun as error:
            return {**{k: default for k, (default, _) in STATUS_FIELDS.items()}, "state": UNREADABLE,
                    "error": str(error)}
        status["state"] = effective_state(status)
        return status

    def read_raw_status(self, run_id: str):
        """status.json as it is on disk (any JSON value); UnreadableRun-free: a missing or broken file
        reads as an object without a state."""
        path = self.existing_run_dir(run_id) / STATUS_FILE
        for _ in range(3):
            try:
                return json.loads(path.read_bytes())
            except (ValueError, FileNotFoundError):
                time.sleep(0.01)   # os.replace makes this rare; a retry covers odd filesystems
        return {"error": "status.json is missing or not JSON"}

    def write_status(self, run_id: str, status: dict, fsync: bool = True) -> None:
        atomic_write_json(self.run_dir(run_id) / STATUS_FILE,
                          {**status, "schema_version": STATUS_SCHEMA_VERSION}, fsync=fsync)

    def update_status(self, run_id: str, **changes) -> dict:
        """Read-modify-write of status.json, for when no training process owns it."""
        raw = self.read_raw_status(run_id)
        status = {**(raw if isinstance(raw, dict) else {}), **changes}
        self.write_status(run_id, status)
        return status

    def transition(self, run_id: str, state: str, **changes) -> dict:
        """Move a run to `state` (InvalidTransition unless core.states allows it from its effective
        state) and record `changes`. Only for when no training process owns status.json."""
        current = self.read_status(run_id)
        check_transition(current["state"], state, run_id)
        return self.update_status(run_id, state=state, **changes)

    def read_metrics(self, run_id: str) -> list[dict]:
        return read_jsonl_lines(self.metrics_path(run_id))

    def metrics_reader(self, run_id: str) -> MetricsReader:
        return MetricsReader(self.metrics_path(run_id))

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

    # --- summaries -----------------------------------------------------------------------------
    def summary(self, run_id: str) -> RunSummary:
        """What the runs table shows of a run. A run whose files cannot be understood is summarised
        as 'unreadable' with the reason, never raised."""
        summary = self._summary_in(self.run_dir(run_id))
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        return summary

    def _summary_in(self, folder: Path) -> RunSummary | None:
        """The summary of the run in `folder`, from the cache while its files are unchanged; None
        when the folder holds no run (no config.json)."""
        run_id = folder.name
        try:
            key = _fingerprint(folder / CONFIG_FILE)
        except FileNotFoundError:
            return None
        try:
            key += _fingerprint(folder / STATUS_FILE)
        except FileNotFoundError:
            pass
        with self._lock:
            cached = self._summaries.get(run_id)
        # An active run's effective state and duration move with the clock: always read afresh.
        if cached and cached[0] == key and cached[1].state not in ACTIVE_STATES:
            return cached[1]
        try:
            summary = self._read_summary(run_id)
        except RunNotFound:
            return None
        with self._lock:
            self._summaries[run_id] = (key, summary)
        return summary

    def _read_summary(self, run_id: str) -> RunSummary:
        status = self.read_status(run_id)
        try:
            config, unknown = self.read_config_with_unknown(run_id)
            problems = config.validate()
            if problems:
                raise UnreadableRun("config.json: " + "; ".join(problems))
        except UnreadableRun as error:
            return RunSummary(run_id, "", UNREADABLE, "?", "?", 0, 0, 0.0, None, None,
                              status.get("created_at") or 0.0, None, str(error))
        if status["state"] == UNREADABLE:
            return RunSummary(run_id, config.name, UNREADABLE, config.dataset, config.model, 0, config.epochs,
                              0.0, None, None, 0.0, None, status["error"])
        notes = (f"config.json has settings this version does not know (kept, not used): "
                 f"{', '.join(sorted(unknown))}",) if unknown else ()
        best = status["best"] or {}
        started, ended = status["started_at"], status["ended_at"]
        duration = None
        if started:
            duration = (ended or (status["heartbeat"] if status["state"] not in ACTIVE_STATES
                                  else time.time()) or started) - started
        total = status["total_steps"] or 0
        progress = 1.0 if status["state"] == "completed" else (min(1.0, status["step"] / total) if total else 0.0)
        return RunSummary(run_id=run_id, name=config.name, state=status["state"], dataset=config.dataset,
                          model=config.model, epoch=status["epoch"], epochs=config.epochs, progress=progress,
                          best_metric=best.get("metric"), best_value=best.get("value"),
                          created_at=status["created_at"] or 0.0, duration_s=duration, error=status["error"],
                          notes=notes)

    def list_runs(self) -> list[RunSummary]:
        """Every run's summary, newest first; unreadable runs included, with their reason."""
        if not self.root.is_dir():
            return []
        with os.scandir(self.root) as entries:
            names = sorted((e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)), reverse=True)
        summaries = [s for s in (self._summary_in(self.root / name) for name in names) if s is not None]
        with self._lock:
            listed = {s.run_id for s in summaries}
            for gone in [r for r in self._summaries if r not in listed]:
                del self._summaries[gone]
        return summaries

    def mark_interrupted_runs(self) -> list[str]:
        """Persist 'interrupted' for active runs whose owner is gone (called at start-up)."""
        marked = []
        for run_id in self.run_ids():
            try:
                status = parse_status(self.read_raw_status(run_id))
            except UnreadableRun:
                continue
            if status["state"] in ACTIVE_STATES and owner_gone(status):
                self.update_status(run_id, state="interrupted", pid=None)
                marked.append(run_id)
        return marked

    def delete_run(self, run_id: str) -> None:
        import shutil
        status = self.read_status(run_id)
        if status["state"] in ACTIVE_STATES:
            raise RuntimeError(f"run {run_id} is {status['state']}; stop it before deleting it")
        path = self.existing_run_dir(run_id)
        # Rename first so readers never see a half-deleted run as a run.
        trash = self.root / f".deleting-{run_id}-{secrets.token_hex(2)}"
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
