"""Runs one training run to its end and records the outcome in its folder.

`python -m core.training.worker RUNS/RUN_ID` is the child process that JobManager supervises; the CLI's
`train` calls run_training() in its own process. Either way the run folder is the only output.
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path

import torch

from core.training.callbacks import Checkpointer, EarlyStopping, MetricsLogger, StatusReporter, StopFileWatcher
from core.runs.checkpoint import UnreadableCheckpoint, load_checkpoint, restore_best_from_latest
from core.data.datasets import DatasetError, load_dataset
from core.runs.lease import ALREADY_RUNNING_EXIT, LeaseHeld, RunLease
from core.runs.states import COMPLETED, FAILED, INTERRUPTED, RUNNING, STOPPED, InvalidTransition
from core.models.pretrained import PretrainedWeightsError
from core.training.probes import ProbeRecorder
from core.runs.files import disk_error_message
from core.runs.status import UnreadableRun, parse_status
from core.runs.store import RunStore
from core.runs.streams import JsonLinesWriter, MetricsWriter, truncate_metrics, truncate_probes
from core.training.trainer import BatchTooLarge, Callback, Trainer, TrainingDiverged, free_cuda_memory


def run_training(store: RunStore, run_id: str, extra_callbacks: list[Callback] = (),
                 handle_signals: bool = True) -> str:
    """Train (or resume) a run; returns its final state: completed, stopped or failed. A failure's
    reason is in status.json's error, for the caller to say (once); only a bug's traceback is printed.
    Raises UnreadableRun (config or status cannot be used), LeaseHeld (another process trains it) or
    InvalidTransition (the run is not in a state that may start) before writing anything."""
    config = store.runnable_config(run_id)
    # Taken before anything is written, held until this process ends: a second start fails here.
    lease = RunLease(store.lease_path(run_id), run_id).acquire()
    try:
        return _train(store, run_id, config, extra_callbacks, handle_signals)
    finally:
        lease.release()


def _train(store: RunStore, run_id: str, config, extra_callbacks, handle_signals: bool) -> str:
    status = parse_status(store.read_raw_status(run_id))
    if status["state"] == RUNNING:
        status["state"] = INTERRUPTED     # we hold the lease: the process that wrote "running" is gone
    reporter = StatusReporter(store, run_id, status)
    stop_watcher = StopFileWatcher(store.stop_path(run_id))
    previous_handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[sig] = signal.signal(sig, lambda *_: stop_watcher.requested.set())
    reporter.start()
    store.remove_temp_files(run_id)      # left by a process killed mid-write
    writer = probe_writer = None
    try:
        dataset = load_dataset(config)
        latest, best = store.checkpoint_path(run_id, "latest"), store.checkpoint_path(run_id, "best")
        checkpoint = None
        if latest.exists():
            checkpoint = load_checkpoint(latest)
            restore_best_from_latest(latest, best)
        # Lines past the checkpoint describe work lost with a crashed process; a torn last line
        # is dropped too, so the file never holds a broken line.
        resumed_step = checkpoint["loop"]["step"] if checkpoint else 0
        dropped = truncate_metrics(store.metrics_path(run_id), keep_until_step=resumed_step)
        truncate_probes(store.probes_path(run_id), keep_until_step=resumed_step)
        retries, batch_size = [], None
        while True:
            writer = MetricsWriter(store.metrics_path(run_id))
            probe_writer = JsonLinesWriter(store.probes_path(run_id))
            # Metrics and probes before checkpoints: a crash between them makes the resume redo the epoch
            # (its lines are past the checkpoint and dropped) instead of losing its lines for good.
            callbacks = [MetricsLogger(writer), ProbeRecorder(probe_writer, config.probe_interval),
                         Checkpointer(latest, best, config.best_metric),
                         EarlyStopping(config.early_stopping_patience, config.best_metric),
                         reporter, stop_watcher, *extra_callbacks]
            trainer = None
            try:
                trainer = Trainer(config, dataset, callbacks, checkpoint=checkpoint, batch_size=batch_size)
                if checkpoint:
                    trainer.load_state_dict(checkpoint)
                # Facts about the data the diagnosis reads (class balance, pixel range).
                reporter.write(classes=dataset.classes, input_shape=list(dataset.input_shape),
                               class_counts=dataset.counts()["train"], mean=list(dataset.mean),
                               std=list(dataset.std), resumed_from_step=resumed_step or None,
                               dropped_metric_lines=dropped, **skipped_images(dataset))
                outcome = trainer.fit()
                break
            except torch.cuda.OutOfMemoryError:
                pass       # handled below, once the error's frames (and the tensors they hold) are gone
            failed = trainer.batch_size if trainer is not None else None
            for stream in (writer, probe_writer):
                stream.close()
            committed = checkpoint is not None or latest.exists()
            if failed is None:
                return _fail(reporter, "CUDA ran out of memory building the model, before any batch: choose a "
                                       "smaller model or image size", out_of_memory={"batch_size": None})
            if config.batch_size == "auto" and not committed and failed > 1:
                # Nothing is saved yet: start again, smaller (the probe's headroom was not enough).
                retries.append({"batch_size": failed, "step": trainer.state.step})
                trainer = callbacks = None
                free_cuda_memory()
                batch_size = failed // 2
                reporter.write(batch_retries=retries)
                print(f"CUDA ran out of memory at batch_size {failed}; batch_size auto tries {batch_size}",
                      file=sys.stderr)
                truncate_metrics(store.metrics_path(run_id), keep_until_step=0)
                truncate_probes(store.probes_path(run_id), keep_until_step=0)
                continue
            fits = trainer.batch_after_oom(failed)
            return _fail(reporter, out_of_memory_message(trainer, failed, fits),
                         out_of_memory={"batch_size": failed, "fits": fits})
        early = trainer.state.stop_reason == "early"
        reporter.finish(outcome, early_stopped_at=trainer.state.epoch if early else None,
                        **skipped_images(dataset))    # a streamed folder meets more while training
        return outcome
    except BatchTooLarge as error:      # batch_size auto: not even a batch of 1 fits
        return _fail(reporter, str(error), out_of_memory={"batch_size": 1, "fits": None})
    except TrainingDiverged as error:
        return _fail(reporter, str(error), diverged_at_step=error.step)
    except (DatasetError, PretrainedWeightsError) as error:   # the files, not a bug (changed since the
        # launch check, or damaged past what it reads): the message names them, no traceback
        return _fail(reporter, str(error))
    except UnreadableCheckpoint as error:     # latest.pt damaged (a disk's fault, a hand edit): resuming
        # would start over and overwrite it; the run stays failed with its files as they are
        return _fail(reporter, f"cannot resume: {error}. Its earlier checkpoints and metrics are kept; "
                               "clone the run to train again from the start")
    except Exception as error:
        message = disk_error_message(error, store.run_dir(run_id))
        if message is None:      # a bug: its traceback (a full disk is not one: no traceback)
            traceback.print_exc()
            message = f"{type(error).__name__}: {error}"
        return _fail(reporter, message)
    finally:
        for stream in (writer, probe_writer):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass       # its lines were synced at each epoch end; the failure is reported above
        store.stop_path(run_id).unlink(missing_ok=True)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


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


def skipped_images(dataset) -> dict:
    """The image files training leaves out, counted and (the first few) named with the reason."""
    info = dataset.info()
    return {"skipped_images": info["skipped"], "skipped_files": info["skipped_files"]}


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
        state = run_training(store, run_dir.name)
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
    sys.exit(main(sys.argv[1:]))
