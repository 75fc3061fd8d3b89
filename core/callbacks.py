"""Callbacks that publish a training run to its folder: metrics, status + heartbeat, checkpoints,
early stopping and the stop file."""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import torch

from core.store import HOST, MetricsWriter, RunStore
from core.trainer import Callback, Trainer

HEARTBEAT_EVERY_S = 2.0


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temp file beside `path`, fsync, then os.replace: never half a checkpoint."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device="cpu") -> dict:
    """A checkpoint is data, never code: weights_only=True refuses pickled objects."""
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{Path(path).name} is not a readable Trainboard checkpoint "
                         f"({type(error).__name__}: {str(error).splitlines()[0][:200]})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        raise ValueError(f"{Path(path).name} is not a Trainboard checkpoint (no model/config inside)")
    return checkpoint


class MetricsLogger(Callback):
    """Appends every log-interval and epoch row to metrics.jsonl (flushed per line, fsync per epoch)."""

    def __init__(self, writer: MetricsWriter):
        self.writer = writer

    def on_log_interval(self, trainer, row):
        self.writer.write({"time": time.time(), **row})

    def on_epoch_end(self, trainer, rows):
        now = time.time()
        for row in rows:
            self.writer.write({"time": now, **row})
        self.writer.sync()

    def on_fit_end(self, trainer, outcome):
        self.writer.sync()


class StatusReporter(Callback):
    """Keeps status.json current: progress after each log interval and epoch, and a heartbeat from a
    background thread every few seconds, so a long batch never makes a live run look dead."""

    def __init__(self, store: RunStore, run_id: str, status: dict):
        self.store, self.run_id = store, run_id
        self.status = status
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def start(self) -> None:
        self.write(state="running", pid=os.getpid(), host=HOST, started_at=self.status.get("started_at")
                   or time.time(), ended_at=None, error=None)
        self.thread.start()

    def write(self, fsync: bool = True, **changes) -> None:
        with self.lock:
            self.status.update(changes, heartbeat=time.time())
            self.store.write_status(self.run_id, dict(self.status), fsync=fsync)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY_S):
            self.write(fsync=False)

    def _progress(self, trainer: Trainer) -> dict:
        s = trainer.state
        return {"epoch": s.epoch + (1 if s.batch_in_epoch else 0), "step": s.step,
                "total_steps": s.total_steps, "steps_per_epoch": s.steps_per_epoch}

    def on_fit_start(self, trainer):
        self.write(fsync=False, **self._progress(trainer), device=str(trainer.device))

    def on_log_interval(self, trainer, row):
        self.write(fsync=False, **self._progress(trainer), last_train={"loss": row["loss"], "acc": row["acc"]})

    def on_epoch_end(self, trainer, rows):
        s = trainer.state
        best = None if s.best_value is None else {
            "metric": trainer.config.best_metric, "value": s.best_value, "epoch": s.best_epoch}
        self.write(**self._progress(trainer), best=best,
                   last_val={"loss": rows[1]["loss"], "acc": rows[1]["acc"]})

    def on_fit_end(self, trainer, outcome):
        self.write(fsync=False, **self._progress(trainer))

    def finish(self, state: str, error: str | None = None, **extra) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        self.write(state=state, error=error, ended_at=time.time(), pid=None, **extra)


class EarlyStopping(Callback):
    """Tracks the best validation value; stops after `patience` epochs without improvement.
    It runs before the Checkpointer, which reads `state.best_epoch` to decide on best.pt."""

    def on_epoch_end(self, trainer, rows):
        s, config = trainer.state, trainer.config
        val = rows[1]
        value = val["acc"] if config.best_metric == "val_acc" else val["loss"]
        better = s.best_value is None or (value > s.best_value if config.best_metric == "val_acc"
                                          else value < s.best_value)
        if better and math.isfinite(value):
            s.best_value, s.best_epoch = value, s.epoch
            s.epochs_without_improvement = 0
        else:
            s.epochs_without_improvement += 1
            if 0 < config.early_stopping_patience <= s.epochs_without_improvement:
                s.should_stop, s.stop_reason = True, "early"


class Checkpointer(Callback):
    """latest.pt every epoch and on stop; best.pt whenever the epoch just ended is the best."""

    def __init__(self, latest: Path, best: Path):
        self.latest, self.best = Path(latest), Path(best)

    def on_epoch_end(self, trainer, rows):
        state = trainer.state_dict()
        save_checkpoint(state, self.latest)
        if trainer.state.best_epoch == trainer.state.epoch:
            save_checkpoint(state, self.best)

    def on_fit_end(self, trainer, outcome):
        if outcome == "stopped" and trainer.state.batch_in_epoch:
            save_checkpoint(trainer.state_dict(), self.latest)


class StopFileWatcher(Callback):
    """Ends the run after the current batch once the stop file exists (written by JobManager.stop)."""

    def __init__(self, stop_path: Path):
        self.stop_path = str(stop_path)
        self.requested = threading.Event()   # set by a signal handler (Ctrl-C, SIGTERM)

    def on_batch_end(self, trainer):
        if self.requested.is_set() or os.path.exists(self.stop_path):
            trainer.state.should_stop, trainer.state.stop_reason = True, "stop"
