"""Runs one training run to its end and records the outcome in its folder.

`python -m core.worker RUNS/RUN_ID` is the child process that JobManager supervises; the CLI's
`train` calls run_training() in its own process. Either way the run folder is the only output.
"""
from __future__ import annotations

import signal
import sys
import threading
import traceback
from pathlib import Path

from core.callbacks import Checkpointer, EarlyStopping, MetricsLogger, StatusReporter, StopFileWatcher
from core.checkpoint import load_checkpoint
from core.data import load_dataset
from core.states import COMPLETED, FAILED, STOPPED, InvalidTransition
from core.store import MetricsWriter, RunStore, UnreadableRun, parse_status, truncate_metrics
from core.trainer import Callback, Trainer, TrainingDiverged


def run_training(store: RunStore, run_id: str, extra_callbacks: list[Callback] = (),
                 handle_signals: bool = True) -> str:
    """Train (or resume) a run; returns its final state: completed, stopped or failed.
    Raises UnreadableRun (config or status cannot be used) or InvalidTransition (the run is not in a
    state that may start) before writing anything."""
    config = store.runnable_config(run_id)
    reporter = StatusReporter(store, run_id, parse_status(store.read_raw_status(run_id)))
    stop_watcher = StopFileWatcher(store.stop_path(run_id))
    previous_handlers = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous_handlers[sig] = signal.signal(sig, lambda *_: stop_watcher.requested.set())
    reporter.start()
    writer = None
    try:
        dataset = load_dataset(config)
        latest = store.checkpoint_path(run_id, "latest")
        checkpoint = load_checkpoint(latest) if latest.exists() else None
        # Lines past the checkpoint describe work lost with a crashed process; a torn last line
        # is dropped too, so the file never holds a broken line.
        resumed_step = checkpoint["loop"]["step"] if checkpoint else 0
        dropped = truncate_metrics(store.metrics_path(run_id), keep_until_step=resumed_step)
        writer = MetricsWriter(store.metrics_path(run_id))
        # Metrics before checkpoints: a crash between the two makes the resume redo the epoch (its
        # lines are past the checkpoint and dropped) instead of losing its lines for good.
        callbacks = [MetricsLogger(writer),
                     Checkpointer(latest, store.checkpoint_path(run_id, "best"), config.best_metric),
                     EarlyStopping(config.early_stopping_patience, config.best_metric),
                     reporter, stop_watcher, *extra_callbacks]
        trainer = Trainer(config, dataset, callbacks)
        if checkpoint:
            trainer.load_state_dict(checkpoint)
        reporter.write(classes=dataset.classes, input_shape=list(dataset.input_shape),
                       skipped_images=len(dataset.skipped), resumed_from_step=resumed_step or None,
                       dropped_metric_lines=dropped)
        outcome = trainer.fit()
        early = trainer.state.stop_reason == "early"
        reporter.finish(outcome, early_stopped_at=trainer.state.epoch if early else None)
        return outcome
    except TrainingDiverged as error:
        reporter.finish(FAILED, error=str(error))
        return FAILED
    except Exception as error:
        traceback.print_exc()
        reporter.finish(FAILED, error=f"{type(error).__name__}: {error}")
        return FAILED
    finally:
        if writer is not None:
            writer.close()
        store.stop_path(run_id).unlink(missing_ok=True)
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m core.worker RUNS/RUN_ID", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    try:
        state = run_training(RunStore(run_dir.parent), run_dir.name)
    except (UnreadableRun, InvalidTransition) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if state in (COMPLETED, STOPPED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
