"""Callbacks that publish a training run to its folder: metrics, status + heartbeat, checkpoints,
early stopping and the stop file."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from core.runs.checkpoint import save_checkpoint
from core.runs.states import HOST, RUNNING, check_transition
from core.runs.store import RunStore
from core.runs.streams import MetricsWriter
from core.training.hooks import Callback, Monitor
from core.training.trainer import Trainer

HEARTBEAT_EVERY_S = 2.0


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

    def on_exception(self, trainer, error):
        self.writer.sync()


class StatusReporter(Callback):
    """Keeps status.json current: progress after each log interval and epoch, and a heartbeat from a
    background thread every few seconds, so a long batch never makes a live run look dead. The
    heartbeat carries the step too: a slow model's log interval can be a minute of batches.

    While the training process runs, this is the only writer of status.json: it holds the whole
    status in memory and rewrites it, so no field written elsewhere can be lost."""

    def __init__(self, store: RunStore, run_id: str, status: dict):
        self.store, self.run_id = store, run_id
        self.status = dict(status)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)
        self.trainer: Trainer | None = None        # set at fit start: the heartbeat reads its progress

    def start(self, supervisor: int | None = None) -> None:
        """The run is this process's now. `supervisor`: the pid of the server that started it (a server
        that restarts follows the children of one that died), None from the command line."""
        check_transition(self.status["state"], RUNNING, self.run_id)
        self.write(state=RUNNING, announce=True, pid=os.getpid(), host=HOST, supervisor=supervisor,
                   started_at=self.status.get("started_at") or time.time(), ended_at=None, error=None)
        self.thread.start()

    def write(self, fsync: bool = True, announce: bool = False, **changes) -> None:
        with self.lock:
            self.status.update(changes, heartbeat=time.time())
            self.store.write_status(self.run_id, dict(self.status), fsync=fsync, announce=announce)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_EVERY_S):
            try:
                # Plain ints read from the training thread's state: at worst a step behind.
                self.write(fsync=False, **(self._progress(self.trainer) if self.trainer else {}))
            except OSError:
                pass     # a full disk: the training thread meets it too and fails the run, saying why

    def _progress(self, trainer: Trainer) -> dict:
        s = trainer.state
        return {"epoch": s.epoch + (1 if s.batch_in_epoch else 0), "step": s.step,
                "total_steps": s.total_steps, "steps_per_epoch": s.steps_per_epoch}

    @staticmethod
    def _best(trainer: Trainer) -> dict | None:
        best = trainer.best
        return None if best.best is None else {"metric": best.metric, "value": best.best, "epoch": best.best_epoch}

    def on_fit_start(self, trainer):
        # A resume restates the best from the checkpoint: a crash may have come before status.json said it.
        facts = {"batch_probe": trainer.batch_probe} if trainer.batch_probe else {}
        self.trainer = trainer
        self.write(fsync=False, **self._progress(trainer), device=str(trainer.device), best=self._best(trainer),
                   setup=trainer.setup(), **facts)

    def on_log_interval(self, trainer, row):
        self.write(fsync=False, **self._progress(trainer), last_train={"loss": row["loss"], "acc": row["acc"]})

    def on_epoch_end(self, trainer, rows):
        self.write(**self._progress(trainer), last_val={"loss": rows[1]["loss"], "acc": rows[1]["acc"]},
                   best=self._best(trainer), **_input_pipeline(trainer, rows[0]))

    def on_fit_end(self, trainer, outcome):
        self.write(fsync=False, **self._progress(trainer))

    def finish(self, state: str, error: str | None = None, **extra) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join()
        self.write(state=state, error=error, ended_at=time.time(), pid=None, **extra)


def _input_pipeline(trainer: Trainer, train_row: dict) -> dict:
    """For a folder streamed from disk: how its DataLoader keeps up (workers, pinned memory, the
    samples/s the epoch ran at and the share of it spent waiting for decoded batches)."""
    if not trainer.dataset.streaming:
        return {}
    epoch_time = max(train_row.get("epoch_time", 0.0), 1e-9)
    return {"input_pipeline": {"workers": trainer.config.num_workers, "pin_memory": trainer.device.type == "cuda",
                               "samples_per_s": train_row["samples_per_s"],
                               "waiting_share": min(1.0, train_row.get("data_wait_s", 0.0) / epoch_time)}}


class EarlyStopping(Callback):
    """Ends the run after `patience` epochs without improvement of its own monitored metric."""

    def __init__(self, patience: int, metric: str = "val_acc"):
        self.patience = patience
        self.monitor = Monitor(metric)

    def on_validation_end(self, trainer, val_row):
        self.monitor.update(val_row, trainer.state.epoch + 1)
        if 0 < self.patience <= self.monitor.since_best:
            trainer.state.should_stop, trainer.state.stop_reason = True, "early"

    def state_dict(self):
        return self.monitor.state_dict()

    def load_state_dict(self, state):
        self.monitor.load_state_dict(state)


class Checkpointer(Callback):
    """latest.pt every epoch and on stop; best.pt whenever the epoch just ended is the best by its own
    monitored metric. best.pt holds what inference needs (no optimizer state).

    Crash-consistent order (MetricsLogger runs first and fsyncs the epoch's lines): latest.pt is the
    commit that says the epoch is done; best.pt follows it. A crash before latest.pt makes the resume
    redo the epoch (its lines are dropped); a crash between the two is repaired before the resume by
    restore_best_from_latest, so best.pt never lags the best epoch the files record."""

    def __init__(self, latest: Path, best: Path, metric: str = "val_acc"):
        self.latest, self.best = Path(latest), Path(best)
        self.monitor = Monitor(metric)
        self.improved = False

    def on_validation_end(self, trainer, val_row):
        self.improved = self.monitor.update(val_row, trainer.state.epoch + 1)

    def on_epoch_end(self, trainer, rows):
        save_checkpoint(trainer.state_dict(), self.latest)
        if self.improved:
            save_checkpoint(trainer.state_dict(for_inference=True), self.best)

    def on_fit_end(self, trainer, outcome):
        if outcome == "stopped" and trainer.state.batch_in_epoch:
            save_checkpoint(trainer.state_dict(), self.latest)

    def state_dict(self):
        return self.monitor.state_dict()

    def load_state_dict(self, state):
        self.monitor.load_state_dict(state)


class StopFileWatcher(Callback):
    """Ends the run after the current batch once the stop file exists (written by JobManager.stop)."""

    def __init__(self, stop_path: Path):
        self.stop_path = str(stop_path)
        self.requested = threading.Event()   # set by a signal handler (Ctrl-C, SIGTERM)

    def on_fit_start(self, trainer):
        self.on_batch_end(trainer)       # a stop asked while the process was starting

    def on_batch_end(self, trainer):
        if self.requested.is_set() or os.path.exists(self.stop_path):
            trainer.state.should_stop, trainer.state.stop_reason = True, "stop"
