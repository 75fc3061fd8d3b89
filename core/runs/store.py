"""The run store: one folder per run (config, status, metrics stream, checkpoints), written atomically.

This module is the one place that knows file names and layout; everything else goes through it.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from core.config import ConfigError, RunConfig, read_config_values
from core.runs.lease import check_not_running
from core.runs.states import (ACTIVE_STATES, CREATED, INTERRUPTED, QUEUED, RUNNING, STOPPED, UNREADABLE, WRITTEN_STATES,
                         check_transition, effective_state, owner_gone)

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
PROBES_FILE = "probes.jsonl"   # per-layer weight/gradient statistics (core.training.probes writes, reads it)
TENSORBOARD_DIR = "tensorboard"   # event files written by `python -m core tensorboard`
STOP_FILE = "STOP"
CHANGES_FILE = ".changes"     # in the runs folder: ids of runs whose state changed, one per line
SUMMARIES_FILE = ".summaries.json"   # in the runs folder: the summary cache, kept across restarts
LOG_FILE = "train.log"
ANNOTATIONS_FILE = "annotations.json"   # a person's tags and note for the run (set_tags, set_note)
LEASE_FILE = ".lease"         # flock'ed by the process that trains the run (core.runs.lease)
TEMP_SUFFIX = ".tmp"          # atomic writes go to ".NAME.*.tmp" beside their file first
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
CHECKPOINTS = ("best", "latest")      # the names a person picks between
EVAL_SPLITS = ("val", "test")         # the splits a checkpoint is evaluated on

STATUS_SCHEMA_VERSION = 2     # 1: status.json before the version was written
EVAL_DIR = "eval"
EVAL_REPORT_FILE = "report.json"      # in an eval dir; written last by core.analysis.evaluate (it marks the cache complete)
QUANTIZE_KINDS = ("dynamic", "static")   # int8 exports: weights only, or weights and activations
EXPORT_FILES = {"onnx": "model.onnx", "onnx-int8-dynamic": "model.int8.onnx",
                "onnx-int8-static": "model.int8-static.onnx", "torchscript": "model.ts.pt",
                "report": "export.json"}
# What predict / serve can run a run's model with, and the export file each reads (None: best.pt).
SERVING_BACKENDS = {"torch": None, "onnx": "onnx", "onnx-int8": "onnx-int8-static"}
RUN_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
DEEP_CHECK_EVERY = 16       # list_runs re-checks each run's files every this many listings
LISTING_TTL_S = 0.5         # list_runs answers again from its last listing for this long
SUMMARIES_SAVE_EVERY_S = 10.0   # the summary cache is saved at most this often, when it changed
SUMMARIES_FORMAT = 2           # 2: settings, test accuracy, tags and note in the summaries
MAX_TAG_LENGTH = 40
MAX_NOTE_LENGTH = 5000
JOURNAL_LIMIT_BYTES = 1 << 20   # the change journal starts over beyond this size


class RunNotFound(KeyError):
    pass


class InvalidRunId(ValueError):
    pass


# Write errors that come from the disk, not from Trainboard: the run fails with a sentence that says
# so and where, and resumes once the disk is fixed.
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only"}


def disk_error(error: BaseException | None) -> OSError | None:
    """The disk error behind `error`, if any: libraries wrap it (torch.save's zip writer raises a
    RuntimeError while handling the OSError of a full disk)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_error_message(error: BaseException, where: Path) -> str | None:
    """A plain sentence for a write that failed because of the disk (None for any other error)."""
    error = disk_error(error)
    if error is None:
        return None
    target = error.filename or where
    try:
        free = f"; {shutil.disk_usage(where).free / 2**20:,.1f} MB free there now"
    except OSError:
        free = ""
    return (f"{DISK_ERRORS[error.errno]}: could not write {target}{free}. Free some space (or make the "
            "folder writable) and resume the run: it continues from its last checkpoint")


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
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


class BadAnnotation(ValueError):
    """A tag or note that cannot be kept (empty, too long, a comma in a tag); nothing was written."""


def check_tag(tag) -> str:
    """A tag as it is kept (surrounding spaces dropped); BadAnnotation says what is wrong with it."""
    text = tag.strip() if isinstance(tag, str) else ""
    if not text:
        raise BadAnnotation(f"a tag must be some text, got {tag!r}")
    if len(text) > MAX_TAG_LENGTH:
        raise BadAnnotation(f"a tag must be at most {MAX_TAG_LENGTH} characters, got {len(text)} ({text[:20]}...)")
    if "," in text or not text.isprintable():
        raise BadAnnotation(f"a tag must not hold a comma, a line break or a control character: {text!r}")
    return text


def _batch_size(config, status: dict) -> int | None:
    """The number a run trains with: batch_size auto's is the one its probe found (None until then)."""
    if isinstance(config.batch_size, int):
        return config.batch_size
    setup = status.get("setup")
    return setup.get("batch_size") if isinstance(setup, dict) else None


def _augmentation_text(config: RunConfig) -> str:
    """The augmentation settings that are on, by their labels: 'Random crop, Rotation 15'; 'none'."""
    from core.config import SETTINGS
    parts = []
    for name, setting in SETTINGS.items():
        value = getattr(config, name)
        if setting.group != "augmentation" or not value:
            continue
        label = re.sub(r"\s*\(.*\)", "", setting.label)        # "Rotation (degrees)" -> "Rotation"
        parts.append(label if value is True else f"{label} {value:g}")
    return ", ".join(parts) or "none"


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
    # The key settings, for the runs table's columns (None / "" for an unreadable run).
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = ""
    augmentation: str = ""
    test_acc: float | None = None    # from the cached evaluation on test (best.pt, else latest.pt), if fresh
    tags: tuple[str, ...] = ()       # a person's tags and note (annotations.json); not the notes above
    note: str = ""

    @property
    def label(self) -> str:
        """How a person tells runs apart in a picker; no state in it, so it holds still while a run trains."""
        return f"{self.name} · {self.run_id}" if self.name else self.run_id


CLONE_COUNTER = re.compile(r"^(.*) \((\d+)\)$")     # "baseline (2)": a counter no name is mistaken for


def clone_name(name: str, taken: set[str]) -> str:
    """A new name for a clone of a run called `name`: "baseline" -> "baseline (2)", "baseline (2)" ->
    "baseline (3)", the first not in `taken` (so the picker never lists two identical names)."""
    if not name:
        return name
    counted = CLONE_COUNTER.match(name)
    stem, start = (counted[1], int(counted[2]) + 1) if counted else (name, 2)
    return next(f"{stem} ({n})" for n in range(start, start + len(taken) + 2) if f"{stem} ({n})" not in taken)


def matching_runs(summaries: list[RunSummary], query: str) -> list[RunSummary]:
    """The runs whose name, id, state, dataset, model or tags contain every word of `query` (any case)."""
    words = query.lower().split()
    if not words:
        return list(summaries)
    return [s for s in summaries
            if all(w in f"{s.name} {s.run_id} {s.state} {s.dataset} {s.model} {' '.join(s.tags)}".lower()
                   for w in words)]


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


def _folder_key(folder: str) -> tuple:
    """Changes whenever a file in the run folder is replaced: every write of status.json and
    config.json is an os.replace, which updates the folder's mtime. One stat per run."""
    stat = os.stat(folder)
    return stat.st_ino, stat.st_mtime_ns


def _files_key(folder: str) -> tuple:
    """Changes when config.json or status.json is edited in place too (an editor that does not
    replace the file): the deep check, made on a rotating share of the runs each listing."""
    key = []
    for name in (CONFIG_FILE, STATUS_FILE):
        try:
            stat = os.stat(os.path.join(folder, name))
            key.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            key.append(None)
    return tuple(key)


class JsonLinesReader:
    """Reads a JSON Lines stream incrementally from a byte offset; a partial last line waits for the
    next read (the writer may be mid-line), like TensorBoard's event reader. Only lines that
    `is_record` accepts are returned."""

    def __init__(self, path: Path, is_record):
        self.path = Path(path)
        self.offset = 0
        self.is_record = is_record

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
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue   # a torn line left by a crash; the resume drops it from the file
                if self.is_record(row):
                    rows.append(row)     # anything else (a hand edit, another program's line) is left out
        return rows


class MetricsReader(JsonLinesReader):
    """metrics.jsonl's rows, read incrementally."""

    def __init__(self, path: Path):
        super().__init__(path, is_metrics_row)


METRIC_SPLITS, METRIC_KINDS = ("train", "val"), ("step", "epoch")


def is_metrics_row(row) -> bool:
    """A line readers can use: split and kind from their sets, a whole step (and epoch, when given),
    numbers elsewhere."""
    if not isinstance(row, dict) or row.get("split") not in METRIC_SPLITS or row.get("kind") not in METRIC_KINDS:
        return False
    whole = all(isinstance(row.get(key), int) and not isinstance(row.get(key), bool)
                for key in ("step", "epoch") if key == "step" or key in row)
    return whole and all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                         for key, value in row.items() if key not in ("split", "kind"))


def is_probe_record(record) -> bool:
    """A probes.jsonl line readers can use (its fields: core.training.probes): whole step and epoch, a layers
    object."""
    return (isinstance(record, dict) and isinstance(record.get("layers"), dict)
            and all(isinstance(record.get(key), int) and not isinstance(record.get(key), bool)
                    for key in ("step", "epoch")))


class JsonLinesWriter:
    """Appends one JSON object per line, flushed at once; fsync on demand (epoch ends). A write that
    fails (a full disk) takes its partial line back, so the file only ever holds whole lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.handle = open(path, "ab", buffering=0)

    def write(self, row: dict) -> None:
        data = memoryview((json.dumps(row, separators=(",", ":")) + "\n").encode())
        start = self.handle.seek(0, os.SEEK_END)
        try:
            while data:      # an unbuffered write may write only part of its bytes
                data = data[self.handle.write(data):]
        except BaseException as error:
            os.ftruncate(self.handle.fileno(), start)
            if isinstance(error, OSError) and error.filename is None:
                raise OSError(error.errno, error.strerror, str(self.path)) from error   # name the file
            raise

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        if not self.handle.closed:
            self.sync()
            self.handle.close()


class MetricsWriter(JsonLinesWriter):
    """metrics.jsonl's appender (a class of its own, so fault injection can aim at it alone)."""


def read_jsonl_lines(path: Path) -> list[dict]:
    return MetricsReader(path).read_new()


def truncate_metrics(path: Path, keep_until_step: int | None) -> int:
    """Drop a torn last line, lines that are not metrics rows, and lines past `keep_until_step` (work
    lost with the crashed process).
    Returns how many lines were dropped. Atomic: a crash here leaves the old file or the new one."""
    return truncate_jsonl(path, keep_until_step, is_metrics_row)


def truncate_probes(path: Path, keep_until_step: int | None) -> int:
    """truncate_metrics for probes.jsonl: a resume records again the probes past its checkpoint."""
    return truncate_jsonl(path, keep_until_step, is_probe_record)


def truncate_jsonl(path: Path, keep_until_step: int | None, is_record) -> int:
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
        except (json.JSONDecodeError, UnicodeDecodeError):
            dropped += 1
            continue
        if not is_record(row):
            dropped += 1
            continue
        if keep_until_step is not None and row["step"] > keep_until_step:
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
        # run_id -> (folder key, files key, RunSummary): a finished run's files are read once, then
        # only its folder is stat()ed, so thousands of runs stay cheap to list.
        self._summaries: dict[str, tuple[tuple, tuple, RunSummary]] = {}
        self._listings = 0
        self._journal_offset: int | None = None      # None until the first listing
        self._unsaved, self._saved_at = False, 0.0
        self._last_listing: tuple[float, list[RunSummary]] | None = None
        self.listing_ttl_s = LISTING_TTL_S
        self._lock = threading.RLock()

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

    def remove_temp_files(self, run_id: str, older_than_s: float = 60.0) -> list[Path]:
        """Delete temp files left by a killed writer. Only the lease holder may call this: every temp
        checkpoint is then an orphan; other temps (status, metrics) count as orphans once they are
        older than any live atomic write."""
        run_dir = self.run_dir(run_id)
        removed = []
        for folder, min_age in ((run_dir / CHECKPOINT_DIR, 0.0), (run_dir, older_than_s)):
            for path in folder.glob(f".*{TEMP_SUFFIX}"):
                try:
                    if time.time() - path.stat().st_mtime >= min_age:
                        path.unlink()
                        removed.append(path)
                except FileNotFoundError:
                    pass
        return removed

    def annotations_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / ANNOTATIONS_FILE

    def eval_report_path(self, run_id: str, checkpoint: str, split: str) -> Path:
        return self.eval_dir(run_id, checkpoint, split) / EVAL_REPORT_FILE

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
        self.announce_change(run_id)
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
            except OSError as error:         # a folder, a permission, an I/O error
                return {"error": f"status.json cannot be read: {error.strerror or error}"}
        return {"error": "status.json is missing or not JSON"}

    def write_status(self, run_id: str, status: dict, fsync: bool = True, announce: bool = False) -> None:
        """Replace status.json. A state other than 'running', or `announce`, is also recorded in the
        change journal, so listings re-read this run; heartbeats of a running run are not (a running
        run is re-read on every listing anyway)."""
        atomic_write_json(self.run_dir(run_id) / STATUS_FILE,
                          {**status, "schema_version": STATUS_SCHEMA_VERSION}, fsync=fsync)
        if announce or status.get("state") != RUNNING:
            self.announce_change(run_id)

    def announce_change(self, run_id: str) -> None:
        """Append the run id to the change journal (best effort: a lost line is caught by the deep
        check within DEEP_CHECK_EVERY listings)."""
        self._last_listing = None
        try:
            with open(self.root / CHANGES_FILE, "ab", buffering=0) as handle:
                handle.write(f"{run_id}\n".encode())      # one short O_APPEND write: never interleaved
        except OSError:
            pass

    def _changed_runs(self) -> set[str] | None:
        """Run ids announced since the last call; None when the journal was removed or truncated
        (then every run is checked)."""
        path = self.root / CHANGES_FILE
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self._journal_offset:
                    self._journal_offset = 0
                    return None
                handle.seek(self._journal_offset)
                chunk = handle.read()
        except FileNotFoundError:
            missing, self._journal_offset = self._journal_offset > 0, 0
            return None if missing else set()
        end = chunk.rfind(b"\n") + 1                       # a line being written waits for next time
        self._journal_offset += end
        if self._journal_offset > JOURNAL_LIMIT_BYTES:
            # Start the journal over; every process that reads it next checks all its runs once.
            os.truncate(path, 0)
            self._journal_offset = 0
        return set(chunk[:end].decode(errors="replace").split())

    def update_status(self, run_id: str, **changes) -> dict:
        """Read-modify-write of status.json, for when no training process owns it."""
        raw = self.read_raw_status(run_id)
        status = {**(raw if isinstance(raw, dict) else {}), **changes}
        self.write_status(run_id, status)
        return status

    def transition(self, run_id: str, state: str, **changes) -> dict:
        """Move a run to `state` (InvalidTransition unless core.runs.states allows it from its effective
        state) and record `changes`. Only for when no training process owns status.json."""
        current = self.read_status(run_id)
        check_transition(current["state"], state, run_id)
        return self.update_status(run_id, state=state, **changes)

    # --- annotations: a person's tags and note -------------------------------------------------
    def read_annotations(self, run_id: str) -> dict:
        """{"tags": [...], "note": "..."}: empty for a run never annotated; UnreadableRun for a file
        that cannot be understood (a hand edit), which is then left as it is."""
        path = self.existing_run_dir(run_id) / ANNOTATIONS_FILE
        try:
            value = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"tags": [], "note": ""}
        except (OSError, ValueError) as error:
            raise UnreadableRun(f"{ANNOTATIONS_FILE} cannot be read: {getattr(error, 'strerror', None) or error}")
        tags, note = (value.get("tags", []), value.get("note", "")) if isinstance(value, dict) else (None, None)
        try:
            if not isinstance(tags, list) or not isinstance(note, str):
                raise BadAnnotation("it must hold an object with a list of tags and a note")
            return {"tags": [check_tag(tag) for tag in tags], "note": note}
        except BadAnnotation as error:
            raise UnreadableRun(f"{ANNOTATIONS_FILE} cannot be read: {error}") from None

    def set_tags(self, run_id: str, add=(), remove=()) -> list[str]:
        """Add and remove tags (sorted, each once); returns the run's tags. A bad tag changes nothing."""
        add, remove = [check_tag(t) for t in add], {t.strip() for t in remove if isinstance(t, str)}
        with self._lock:
            tags = sorted((set(self.read_annotations(run_id)["tags"]) | set(add)) - remove)
            return self.annotate(run_id, tags=tags)["tags"]

    def set_note(self, run_id: str, note: str) -> str:
        """Replace the run's note ("" clears it); returns it as kept."""
        return self.annotate(run_id, note=note)["note"]

    def annotate(self, run_id: str, tags=None, note: str | None = None) -> dict:
        """Replace the run's tags and/or note (None keeps it) in one atomic write; both are checked
        first, so bad input changes nothing. Returns {"tags", "note"} as kept."""
        if tags is not None:
            tags = sorted({check_tag(tag) for tag in tags})
        if note is not None:
            if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH:
                raise BadAnnotation(f"a note must be text of at most {MAX_NOTE_LENGTH:,} characters"
                                    + (f", got {len(note):,}" if isinstance(note, str) else ""))
            note = note.strip()
        with self._lock:
            current = self.read_annotations(run_id)
            kept = {"tags": current["tags"] if tags is None else tags, "note": current["note"] if note is None else note}
            atomic_write_json(self.annotations_path(run_id), kept)
        self.announce_change(run_id)          # listings show the new tags at once
        return kept

    def _fresh_test_accuracy(self, run_id: str) -> float | None:
        """Test accuracy from the evaluation cache (best.pt's, else latest.pt's), never computed here;
        None when the run was not evaluated on test, or its checkpoint changed since."""
        for checkpoint in CHECKPOINTS:
            try:
                report_path = self.eval_report_path(run_id, checkpoint, "test")
                if report_path.stat().st_mtime_ns < self.checkpoint_path(run_id, checkpoint).stat().st_mtime_ns:
                    continue                  # the checkpoint was written after the evaluation
                accuracy = json.loads(report_path.read_bytes()).get("accuracy")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
                return float(accuracy)
        return None

    def read_metrics(self, run_id: str) -> list[dict]:
        return read_jsonl_lines(self.metrics_path(run_id))

    def metrics_reader(self, run_id: str) -> MetricsReader:
        return MetricsReader(self.metrics_path(run_id))

    def probe_reader(self, run_id: str) -> JsonLinesReader:
        """probes.jsonl's records, read incrementally (read_new(), as metrics_reader)."""
        return JsonLinesReader(self.probes_path(run_id), is_probe_record)

    def exists(self, run_id: str) -> bool:
        try:
            return (self.run_dir(run_id) / CONFIG_FILE).is_file()
        except InvalidRunId:
            return False

    def change_signature(self) -> tuple:
        """Changes when a run is created or deleted, or changes state or tags, from any process on this
        runs folder (the change journal grows); cheap enough for every open page to poll: one stat and
        one directory listing."""
        try:
            with os.scandir(self.root) as entries:
                names = hash(frozenset(e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)))
        except FileNotFoundError:
            names = None
        return self._journal_key(), names

    def _journal_key(self) -> tuple | None:
        try:
            journal = os.stat(self.root / CHANGES_FILE)
        except FileNotFoundError:
            return None
        return journal.st_ino, journal.st_size

    def _folder_stamp(self) -> tuple:
        """Two stats that change with any run created, deleted or changing state (a run folder made or
        removed changes the runs folder's mtime; so does the summary cache's write, which only costs a
        listing)."""
        try:
            root = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            root = None
        return self._journal_key(), root

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
        summary = self._summary_in(check_run_id(run_id))
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in {self.root}")
        return summary

    def _summary_in(self, run_id: str) -> RunSummary | None:
        """The run's summary, from the cache while its folder and files are unchanged; None when the
        folder holds no run (no config.json)."""
        folder = os.path.join(self.root, run_id)
        try:
            folder_key = _folder_key(folder)
        except FileNotFoundError:
            return None
        with self._lock:
            cached = self._summaries.get(run_id)
        # An active run's effective state and duration move with the clock: always read afresh.
        files_key = _files_key(folder)          # taken before reading: a later change is seen next time
        if cached and cached[:2] == (folder_key, files_key) and cached[2].state not in ACTIVE_STATES:
            return cached[2]
        try:
            summary = self._read_summary(run_id)
        except RunNotFound:
            return None
        with self._lock:
            self._summaries[run_id] = (folder_key, files_key, summary)
            self._unsaved |= summary.state not in ACTIVE_STATES
        return summary

    def _read_summary(self, run_id: str) -> RunSummary:
        status = self.read_status(run_id)
        try:
            config, unknown = self.read_config_with_unknown(run_id)
        except UnreadableRun as error:
            return RunSummary(run_id, "", UNREADABLE, "?", "?", 0, 0, 0.0, None, None,
                              status["created_at"] or 0.0, None, str(error))
        problems = config.validate()
        if problems or status["state"] == UNREADABLE:
            # Shown with what can be told of it (its name, when that at least is text).
            text = {name: value if isinstance(value, str) else "?"
                    for name, value in (("name", config.name), ("dataset", config.dataset), ("model", config.model))}
            reason = "config.json: " + "; ".join(problems) if problems else status["error"]
            return RunSummary(run_id, text["name"] if text["name"] != "?" else "", UNREADABLE, text["dataset"],
                              text["model"], 0, 0, 0.0, None, None, status["created_at"] or 0.0, None, reason)
        notes = (f"config.json has settings this version does not know (kept, not used): "
                 f"{', '.join(sorted(unknown))}",) if unknown else ()
        try:
            annotations = self.read_annotations(run_id)
        except UnreadableRun as error:
            annotations = {"tags": [], "note": ""}
            notes += (f"{error}; its tags and note are not shown (fix or delete the file)",)
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
                          notes=notes, batch_size=_batch_size(config, status), lr=config.lr,
                          optimizer=config.optimizer,
                          augmentation=_augmentation_text(config), test_acc=self._fresh_test_accuracy(run_id),
                          tags=tuple(annotations["tags"]), note=annotations["note"])

    def list_runs(self) -> list[RunSummary]:
        """Every run's summary, newest first; unreadable runs included, with their reason.

        Cheap at 10,000 runs: one directory listing, then a finished run's cached summary is used
        as it is unless the change journal names it; running runs are read afresh; a rotating
        sixteenth of the runs get the deep check (their files stat()ed), which also catches files
        edited in place by hand. Several pages in one rerun share one listing (LISTING_TTL_S)."""
        with self._lock:
            last, stamp = self._last_listing, self._folder_stamp()
            # Within the TTL, and only if no process changed the folder since (a page rerun because
            # of that change must see it).
            if last and time.monotonic() - last[0] < self.listing_ttl_s and last[2] == stamp:
                return list(last[1])
            summaries = self._list_runs()
            self._last_listing = (time.monotonic(), summaries, stamp)
            return list(summaries)

    def _list_runs(self) -> list[RunSummary]:
        if not self.root.is_dir():
            return []
        if self._journal_offset is None:
            # The first listing of this process: start from the summaries a previous process saved
            # and check each run's folder once; the journal's past is not needed.
            self._load_saved_summaries()
            changed = None
            try:
                self._journal_offset = os.stat(self.root / CHANGES_FILE).st_size
            except FileNotFoundError:
                self._journal_offset = 0
        else:
            changed = self._changed_runs()         # None: the journal was lost, check every folder
        with os.scandir(self.root) as entries:
            names = sorted((e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)), reverse=True)
        self._listings += 1
        turn, root = self._listings % DEEP_CHECK_EVERY, os.fspath(self.root)
        cache, summaries = self._summaries, []
        for i, name in enumerate(names):
            cached = cache.get(name)
            if (cached is not None and i % DEEP_CHECK_EVERY != turn and cached[2].state not in ACTIVE_STATES
                    and (changed is None or name not in changed)):
                if changed is not None:
                    summaries.append(cached[2])      # the common case: no syscall at all
                    continue
                try:
                    if _folder_key(f"{root}/{name}") == cached[0]:
                        summaries.append(cached[2])
                        continue
                except FileNotFoundError:
                    continue
            if changed and name in changed:
                cache.pop(name, None)
            summary = self._summary_in(name)
            if summary is not None:
                summaries.append(summary)
        listed = {s.run_id for s in summaries}
        for gone in [r for r in cache if r not in listed]:
            del cache[gone]
        if self._unsaved and time.monotonic() - self._saved_at > SUMMARIES_SAVE_EVERY_S:
            self._save_summaries()
        return summaries

    def _save_summaries(self) -> None:
        """Write the summary cache for the next process (best effort: it is only a cache)."""
        runs = {run_id: [folder_key, files_key, dataclasses.asdict(summary)]
                for run_id, (folder_key, files_key, summary) in self._summaries.items()
                if summary.state not in ACTIVE_STATES}
        try:
            atomic_write_json(self.root / SUMMARIES_FILE, {"format": SUMMARIES_FORMAT, "runs": runs}, fsync=False)
        except OSError:
            return
        self._unsaved, self._saved_at = False, time.monotonic()

    def _load_saved_summaries(self) -> None:
        """Fill the cache from the saved summaries; a missing, older or broken file is ignored."""
        try:
            saved = json.loads((self.root / SUMMARIES_FILE).read_bytes())
            if saved.get("format") != SUMMARIES_FORMAT:
                return
            loaded = {}
            for run_id, (folder_key, files_key, fields) in saved["runs"].items():
                files_key = tuple(tuple(k) if k is not None else None for k in files_key)
                loaded[run_id] = (tuple(folder_key), files_key,
                                  RunSummary(**{**fields, "notes": tuple(fields["notes"]), "tags": tuple(fields["tags"])}))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return
        self._summaries.update(loaded)

    def orphaned_runs(self) -> list[tuple[str, str]]:
        """(run id, state written) of active runs whose owner is gone: read at start-up. Only runs that
        listings show as active or interrupted are looked at: not 10,000 status files."""
        orphans = []
        for summary in self.list_runs():
            if summary.state not in ACTIVE_STATES | {INTERRUPTED}:
                continue
            try:
                status = parse_status(self.read_raw_status(summary.run_id))
            except UnreadableRun:
                continue
            if status["state"] in ACTIVE_STATES and owner_gone(status):
                orphans.append((summary.run_id, status["state"]))
        return orphans

    def request_stop(self, run_id: str) -> str | None:
        """Ask a run to end (the app's Stop and the CLI's `stop`): a queued run is stopped at once; a
        running one ends after its current batch, when its process finds the stop file. Returns
        'stopped', 'running' (the stop is asked), or None when the run is neither queued nor running."""
        status = parse_status(self.read_raw_status(run_id))
        if status["state"] == QUEUED:
            self.transition(run_id, STOPPED, pid=None, ended_at=time.time())
            # Also the file: a server that started this run a moment ago stops it at once. A resume
            # removes it.
            self.stop_path(run_id).write_text(str(time.time()))
            return STOPPED
        if effective_state(status) == RUNNING:
            # The process owns status.json while it runs: it learns of the stop from this file.
            self.stop_path(run_id).write_text(str(time.time()))
            return RUNNING
        return None

    def delete_run(self, run_id: str) -> None:
        import shutil
        status = self.read_status(run_id)
        if status["state"] in ACTIVE_STATES:
            raise RuntimeError(f"run {run_id} is {status['state']}; stop it before deleting it")
        check_not_running(self.lease_path(run_id), run_id)
        path = self.existing_run_dir(run_id)
        # Rename first so readers never see a half-deleted run as a run.
        trash = self.root / f".deleting-{run_id}-{secrets.token_hex(2)}"
        os.replace(path, trash)
        self._last_listing = None
        shutil.rmtree(trash, ignore_errors=True)
