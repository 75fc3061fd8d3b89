"""Runs one training run to its end and records the outcome in its folder.

`python -m core.training.worker RUNS/RUN_ID` is the child process that JobManager starts (through
core.jobs.launcher); the CLI's `train` calls run_training() in its own process. Either way the run
folder is the only output. A run goes through four phases: prepare (or resume) from its files, build
the callbacks that publish it, fit (starting again at a smaller batch when batch_size auto's choice
ran out of memory), and say the outcome in status.json.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from core.config import RunConfig
from core.data.datasets import Dataset, DatasetError, load_dataset
from core.jobs.launcher import report_exit, supervisor_pid
from core.models.pretrained import PretrainedWeightsError
from core.runs.checkpoint import UnreadableCheckpoint, load_checkpoint, restore_best_from_latest
from core.runs.files import disk_error_message
from core.runs.lease import ALREADY_RUNNING_EXIT, LeaseHeld, RunLease
from core.runs.states import COMPLETED, FAILED, INTERRUPTED, RUNNING, STOPPED, InvalidTransition
from core.runs.status import UnreadableRun, parse_status
from core.runs.store import RunStore
from core.runs.streams import JsonLinesWriter, MetricsWriter, truncate_metrics, truncate_probes
from core.training.accelerator import free_cuda_memory
from core.training.batch_size import BatchTooLarge, batch_after_oom
from core.training.callbacks import Checkpointer, EarlyStopping, MetricsLogger, StatusReporter, StopFileWatcher
from core.training.hooks import Callback
from core.training.probes import ProbeRecorder
from core.training.trainer import Trainer, TrainingDiverged


def run_training(store: RunStore, run_id: str, extra_callbacks: list[Callback] = (),
                 handle_signals: bool = True, supervisor: int | None = None) -> str:
    """Train (or resume) a run; returns its final state: completed, stopped or failed. A failure's
    reason is in status.json's error, for the caller to say (once); only a bug's traceback is printed.
    Raises UnreadableRun (config or status cannot be used), LeaseHeld (another process trains it) or
    InvalidTransition (the run is not in a state that may start) before writing anything. `supervisor`:
    the pid of the server whose child this process is."""
    config = store.runnable_config(run_id)
    # Taken before anything is written, held until this process ends: a second start fails here.
    lease = RunLease(store.lease_path(run_id), run_id).acquire()
    try:
        status = parse_status(store.read_raw_status(run_id))
        if status["state"] == RUNNING:
            status["state"] = INTERRUPTED     # we hold the lease: the process that wrote "running" is gone
        reporter = StatusReporter(store, run_id, status)
        stop_watcher = StopFileWatcher(store.stop_path(run_id))
        with _signals_ask_to_stop(stop_watcher, handle_signals):
            reporter.start(supervisor)
            store.remove_temp_files(run_id)      # left by a process killed mid-write
            try:
                start = _prepare(store, run_id, config)
                return _fit(store, run_id, start, [reporter, stop_watcher, *extra_callbacks], reporter)
            except Exception as error:
                message, facts = _failure(error, store.run_dir(run_id))
                return _fail(reporter, message, **facts)
            finally:
                store.stop_path(run_id).unlink(missing_ok=True)
    finally:
        lease.release()


@contextlib.contextmanager
def _signals_ask_to_stop(stop_watcher: StopFileWatcher, handle: bool):
    """Ctrl-C and SIGTERM end the run after its current batch, as the stop file does."""
    previous = {}
    if handle and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda *_: stop_watcher.requested.set())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- phase 1: prepare, or resume from the files ---------------------------------------------------
@dataclass
class Start:
    """What a run starts from: its data, the checkpoint it resumes (None: a fresh start), and what
    the files said about the crash before it."""
    config: RunConfig
    dataset: Dataset
    checkpoint: dict | None
    resumed_step: int
    dropped_metric_lines: int


def _prepare(store: RunStore, run_id: str, config) -> Start:
    dataset = load_dataset(config)
    latest, best = store.checkpoint_path(run_id, "latest"), store.checkpoint_path(run_id, "best")
    checkpoint = None
    if latest.exists():
        checkpoint = load_checkpoint(latest)
        restore_best_from_latest(latest, best)
    # Lines past the checkpoint describe work lost with a crashed process; a torn last line is
    # dropped too, so the file never holds a broken line.
    resumed_step = checkpoint["loop"]["step"] if checkpoint else 0
    dropped = truncate_metrics(store.metrics_path(run_id), keep_until_step=resumed_step)
    truncate_probes(store.probes_path(run_id), keep_until_step=resumed_step)
    return Start(config, dataset, checkpoint, resumed_step, dropped)


# --- phase 2: the callbacks that publish the run ----------------------------------------------------
class Publishers:
    """The metric and probe streams of one attempt and the callbacks writing the run folder. Metrics
    and probes come before checkpoints: a crash between them makes the resume redo the epoch (its
    lines are past the checkpoint and dropped) instead of losing its lines for good."""

    def __init__(self, store: RunStore, run_id: str, config, others: list[Callback]):
        self.streams = [MetricsWriter(store.metrics_path(run_id))]
        self.streams.append(JsonLinesWriter(store.probes_path(run_id)))
        latest, best = store.checkpoint_path(run_id, "latest"), store.checkpoint_path(run_id, "best")
        self.callbacks = [MetricsLogger(self.streams[0]), ProbeRecorder(self.streams[1], config.probe_interval),
                          Checkpointer(latest, best, config.best_metric),
                          EarlyStopping(config.early_stopping_patience, config.best_metric), *others]

    def close(self) -> None:
        for stream in self.streams:
            try:
                stream.close()
            except OSError:
                pass       # its lines were synced at each epoch end; a failure is reported elsewhere


# --- phase 3: fit, with the out-of-memory retry ---------------------------------------------------
def _fit(store: RunStore, run_id: str, start: Start, others: list[Callback], reporter: StatusReporter) -> str:
    config, retries, batch_size = start.config, [], None
    while True:
        publishers = Publishers(store, run_id, config, others)
        trainer = None
        try:
            try:
                trainer = Trainer(config, start.dataset, publishers.callbacks, checkpoint=start.checkpoint,
                                  batch_size=batch_size)
                if start.checkpoint:
                    trainer.load_state_dict(start.checkpoint)
                # Facts about the data the diagnosis reads (class balance, pixel range).
                dataset = start.dataset
                reporter.write(classes=dataset.classes, input_shape=list(dataset.input_shape),
                               class_counts=dataset.counts()["train"], mean=list(dataset.mean),
                               std=list(dataset.std), resumed_from_step=start.resumed_step or None,
                               dropped_metric_lines=start.dropped_metric_lines, **skipped_images(dataset))
                return _say_outcome(reporter, trainer, trainer.fit())
            except torch.cuda.OutOfMemoryError:
                pass       # handled below, once the error's frames (and the tensors they hold) are gone
        finally:
            publishers.close()
        failed = trainer.batch_size if trainer is not None else None
        if failed is None:
            return _fail(reporter, "CUDA ran out of memory building the model, before any batch: choose a "
                                   "smaller model or image size", out_of_memory={"batch_size": None})
        committed = start.checkpoint is not None or store.checkpoint_path(run_id, "latest").exists()
        if config.batch_size == "auto" and not committed and failed > 1:
            # Nothing is saved yet: start again, smaller (the probe's headroom was not enough).
            retries.append({"batch_size": failed, "step": trainer.state.step})
            trainer = publishers = None
            free_cuda_memory()
            batch_size = failed // 2
            reporter.write(batch_retries=retries)
            print(f"CUDA ran out of memory at batch_size {failed}; batch_size auto tries {batch_size}",
                  file=sys.stderr)
            truncate_metrics(store.metrics_path(run_id), keep_until_step=0)
            truncate_probes(store.probes_path(run_id), keep_until_step=0)
            continue
        fits = batch_after_oom(trainer, failed)
        return _fail(reporter, out_of_memory_message(trainer, failed, fits),
                     out_of_memory={"batch_size": failed, "fits": fits})


def out_of_memory_message(trainer: Trainer, failed: int, fits: int | None) -> str:
    """What to do after CUDA ran out of memory at batch size `failed`, with the batch found to fit."""
    config, (_, h, w) = trainer.config, trainer.dataset.input_shape
    what = (f"CUDA ran out of memory at batch_size {failed} ({config.model} at {h}x{w}"
            f"{', ' + trainer.setup()['precision'] if trainer.amp else ''}"
            f"{', batch_size auto chose it' if config.batch_size == 'auto' else ''}, step {trainer.state.step})")
    if fits is None:
        return f"{what}: not even batch_size 1 fits now; choose a smaller model or image size"
    samples = failed * config.accumulate_steps
    return (f"{what}: batch_size {fits} fits (measured just now); launch again with batch_size {fits}, or with "
            f"batch_size {fits} and accumulate_steps {samples // fits} for the same {samples} samples per step")


# --- phase 4: say the outcome ---------------------------------------------------------------------
def _say_outcome(reporter: StatusReporter, trainer: Trainer, outcome: str) -> str:
    early = trainer.state.stop_reason == "early"
    reporter.finish(outcome, early_stopped_at=trainer.state.epoch if early else None,
                    **skipped_images(trainer.dataset))    # a streamed folder meets more while training
    return outcome


def skipped_images(dataset) -> dict:
    """The image files training leaves out, counted and (the first few) named with the reason."""
    info = dataset.info()
    return {"skipped_images": info["skipped"], "skipped_files": info["skipped_files"]}


def _failure(error: Exception, run_dir: Path) -> tuple[str, dict]:
    """(the sentence status.json says, the facts beside it) for the error a run ended with. Call it
    while handling the error: a bug's traceback is printed, nothing else's."""
    if isinstance(error, BatchTooLarge):      # batch_size auto: not even a batch of 1 fits
        return str(error), {"out_of_memory": {"batch_size": 1, "fits": None}}
    if isinstance(error, TrainingDiverged):
        return str(error), {"diverged_at_step": error.step}
    if isinstance(error, (DatasetError, PretrainedWeightsError)):   # the files, not a bug (changed since
        return str(error), {}       # the launch check, or damaged past what it reads): the message names them
    if isinstance(error, UnreadableCheckpoint):   # latest.pt damaged (a disk's fault, a hand edit): resuming
        # would start over and overwrite it; the run stays failed with its files as they are
        return (f"cannot resume: {error}. Its earlier checkpoints and metrics are kept; clone the run to train "
                "again from the start"), {}
    message = disk_error_message(error, run_dir)
    if message is None:      # a bug: its traceback (a full disk is not one: no traceback)
        traceback.print_exc()
        message = f"{type(error).__name__}: {error}"
    return message, {}


def _fail(reporter: StatusReporter, message: str, **extra) -> str:
    try:
        reporter.finish(FAILED, error=message, **extra)
    except OSError as error:
        # status.json cannot be written either (the disk is still full): say it where we can.
        print(f"error: the run failed ({message}) and status.json could not record it ({error})",
              file=sys.stderr)
    return FAILED


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m core.training.worker RUNS/RUN_ID", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    store = RunStore(run_dir.parent)
    try:
        state = run_training(store, run_dir.name, supervisor=supervisor_pid())
    except LeaseHeld as error:
        print(f"error: {error}", file=sys.stderr)
        return ALREADY_RUNNING_EXIT
    except (UnreadableRun, InvalidTransition) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    error = store.read_status(run_dir.name).get("error") if state == FAILED else None
    if error:
        print(f"error: {error}", file=sys.stderr)     # the run's log: JobManager quotes its last lines
    return 0 if state in (COMPLETED, STOPPED) else 1


if __name__ == "__main__":
    sys.exit(report_exit(main(sys.argv[1:])))
