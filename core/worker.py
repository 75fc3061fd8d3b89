"""Runs one training run to its end and records the outcome in its folder.

`python -m core.worker RUNS/RUN_ID` is the child process that JobManager supervises; the CLI's
`train` calls run_training() in its own process. Either way the run folder is the only output.
"""
from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path

from core.callbacks import (Checkpointer, EarlyStopping, MetricsLogger, StatusReporter,
                            StopFileWatcher, load_checkpoint)
from core.data import load_dataset
from core.store import MetricsWriter, RunStore, truncate_metrics
from core.trainer import Callback, Trainer, TrainingDiverged


def run_training(store: RunStore, run_id: str, extra_callbacks: list[Callback] = (),
                 handle_signals: bool = True) -> str:
    """Train (or resume) a run; returns its final state: completed, stopped or failed."""
    config = store.read_config(run_id)
    reporter = StatusReporter(store, run_id, store.read_raw_status(run_id))
    stop_watcher = StopFileWatcher(store.stop_path(run_id))
    if handle_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop_watcher.requested.set())
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
        callbacks = [EarlyStopping(), Checkpointer(latest, store.checkpoint_path(run_id, "best")),
                     MetricsLogger(writer), reporter, stop_watcher, *extra_callbacks]
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
        reporter.finish("failed", error=str(error))
        return "failed"
    except Exception as error:
        traceback.print_exc()
        reporter.finish("failed", error=f"{type(error).__name__}: {error}")
        return "failed"
    finally:
        if writer is not None:
            writer.close()
        store.stop_path(run_id).unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m core.worker RUNS/RUN_ID", file=sys.stderr)
        return 2
    run_dir = Path(argv[0])
    state = run_training(RunStore(run_dir.parent), run_dir.name)
    return 0 if state in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
