"""The run store: one folder per run (config, status, metrics stream, checkpoints), written atomically.

This module is the one place that knows file names and layout; everything else goes through it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from core.config import RunConfig

CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.jsonl"
STOP_FILE = "STOP"
LOG_FILE = "train.log"
CHECKPOINT_DIR = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"

ACTIVE_STATES = frozenset({"queued", "running"})
TERMINAL_STATES = frozenset({"completed", "failed", "stopped", "interrupted"})
RESUMABLE_STATES = frozenset({"stopped", "interrupted", "failed"})
HEARTBEAT_STALE_S = 10.0
RUN_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,127}")
HOST = socket.gethostname()


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


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_gone(status: dict, now: float | None = None) -> bool:
    """True when an active run's owning process has died or stopped beating."""
    now = time.time() if now is None else now
    if status.get("host") == HOST and status.get("pid") is not None and not pid_alive(status.get("pid")):
        return True
    heartbeat = status.get("heartbeat")
    return status.get("state") == "running" and (heartbeat is None or now - heartbeat > HEARTBEAT_STALE_S)


def effective_state(status: dict, now: float | None = None) -> str:
    """The state every reader shows: an active run whose owner is gone is 'interrupted'."""
    state = status.get("state", "unknown")
    if state in ACTIVE_STATES and owner_gone(status, now):
        return "interrupted"
    return state


@dataclass
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
    """The runs folder. Thread-safe by construction: every write is atomic or append-only."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_runs_dir()

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

    # --- create / read / write ----------------------------------------------------------------
    def new_run_id(self, config: RunConfig) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", (config.name or f"{config.dataset}-{config.model}").lower())
        slug = slug.strip("-")[:40] or "run"
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"

    def create_run(self, config: RunConfig) -> str:
        """Write config.json and a queued status.json; the config must already be valid."""
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
        atomic_write_bytes(path / CONFIG_FILE, config.to_json().encode())
        now = time.time()
        self.write_status(run_id, {"state": "created", "epoch": 0, "step": 0, "total_steps": None,
                                   "created_at": now, "started_at": None, "ended_at": None,
                                   "heartbeat": None, "best": None, "error": None})
        return run_id

    def read_config(self, run_id: str) -> RunConfig:
        path = self.existing_run_dir(run_id) / CONFIG_FILE
        return RunConfig.from_json(path.read_text())

    def read_status(self, run_id: str) -> dict:
        """status.json with the effective state (stale 'running' -> 'interrupted')."""
        status = self.read_raw_status(run_id)
        status["state"] = effective_state(status)
        return status

    def read_raw_status(self, run_id: str) -> dict:
        path = self.existing_run_dir(run_id) / STATUS_FILE
        for _ in range(3):
            try:
                return json.loads(path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                time.sleep(0.01)   # os.replace makes this rare; a retry covers odd filesystems
        return {"state": "unknown", "error": "status.json unreadable"}

    def write_status(self, run_id: str, status: dict, fsync: bool = True) -> None:
        atomic_write_json(self.run_dir(run_id) / STATUS_FILE, status, fsync=fsync)

    def update_status(self, run_id: str, **changes) -> dict:
        status = self.read_raw_status(run_id)
        status.update(changes)
        self.write_status(run_id, status)
        return status

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
        if not self.root.is_dir():
            return []
        return sorted((p.name for p in self.root.iterdir()
                       if RUN_ID_PATTERN.fullmatch(p.name) and (p / CONFIG_FILE).is_file()),
                      reverse=True)

    def summary(self, run_id: str) -> RunSummary:
        config = self.read_config(run_id)
        status = self.read_status(run_id)
        best = status.get("best") or {}
        started, ended = status.get("started_at"), status.get("ended_at")
        duration = None
        if started:
            duration = (ended or (status.get("heartbeat") if status["state"] not in ACTIVE_STATES
                                  else time.time()) or started) - started
        total = status.get("total_steps") or 0
        progress = min(1.0, status.get("step", 0) / total) if total else 0.0
        if status["state"] == "completed":
            progress = 1.0
        return RunSummary(run_id=run_id, name=config.name, state=status["state"],
                          dataset=config.dataset, model=config.model, epoch=status.get("epoch", 0),
                          epochs=config.epochs, progress=progress, best_metric=best.get("metric"),
                          best_value=best.get("value"), created_at=status.get("created_at") or 0.0,
                          duration_s=duration, error=status.get("error"))

    def list_runs(self) -> list[RunSummary]:
        summaries = []
        for run_id in self.run_ids():
            try:
                summaries.append(self.summary(run_id))
            except (RunNotFound, OSError, ValueError):
                continue    # a run folder being deleted or written for the first time
        return summaries

    def mark_interrupted_runs(self) -> list[str]:
        """Persist 'interrupted' for active runs whose owner is gone (called at start-up)."""
        marked = []
        for run_id in self.run_ids():
            status = self.read_raw_status(run_id)
            if status.get("state") in ACTIVE_STATES and owner_gone(status):
                status.update(state="interrupted", pid=None)
                self.write_status(run_id, status)
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
