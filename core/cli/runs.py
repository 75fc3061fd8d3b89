"""Commands that make and manage runs: train, lr-find, runs, stop, delete, show, resume, tag, note.

Each add_NAME(sub, parents) registers its command's parser right above the cmd_NAME(args, store) it runs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from core.cli.common import EXIT_FAILED, EXIT_OK, Rejected, launch_parent
from core.config import ConfigError, RunConfig, settings_help
from core.runs.annotations import BadAnnotation, read_annotations, set_note, set_tags
from core.runs.lease import LeaseHeld, check_not_running
from core.runs.states import RESUMABLE_STATES, STOPPED, InvalidTransition
from core.runs.status import UnreadableRun
from core.runs.store import RunStore


def launch_config(args) -> RunConfig:
    """The RunConfig that --config, --dataset, the shortcuts and --set describe, checked as a launch is
    (settings and data); Rejected with every problem."""
    from core.data.datasets import validate_run_config
    from core.data.folders import proposed_config
    from core.settings_file import config_from_settings, read_settings_file
    overrides = {k: v for k, v in (("dataset", args.dataset), ("model", args.model), ("epochs", args.epochs),
                                   ("lr", args.lr), ("data_path", args.data), ("name", getattr(args, "name", None)))
                 if v is not None}
    # --batch-size takes what --set batch_size= takes: a number or "auto".
    updates = ([f"batch_size={args.batch_size}"] if args.batch_size is not None else []) + (args.set or [])
    try:
        if args.config:
            config = config_from_settings(read_settings_file(args.config), args.config, overrides, updates)
        else:
            config = proposed_config(overrides.pop("dataset", "digits"), **overrides).with_updates(updates)
    except (ConfigError, TypeError) as error:
        raise Rejected(getattr(error, "problems", [str(error)]))
    problems = validate_run_config(config)
    if problems:
        raise Rejected(problems)
    return config


def _add_launch_command(sub, parents, name: str, text: str) -> argparse.ArgumentParser:
    """A command that takes a run's config (train, lr-find), with every setting --set takes in its epilog."""
    epilog = ("settings for --set KEY=VALUE (the defaults shown are digits'; each dataset has its own "
              "starting points):\n" + settings_help())
    return sub.add_parser(name, parents=[*parents, launch_parent()], help=text, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _progress_callback():
    """How training shows its progress on stderr: a live bar on a terminal; in a log, where every bar
    refresh would be a line of its own, one line per epoch."""
    return _tqdm_bar() if sys.stderr.isatty() else _epoch_lines()


def _tqdm_bar():
    from tqdm import tqdm

    from core.training.hooks import Callback

    class TqdmProgress(Callback):
        """A tqdm bar over optimizer steps, the latest loss in its postfix."""

        def on_fit_start(self, trainer):
            s = trainer.state
            self.bar = tqdm(total=s.total_steps, initial=s.step, unit="step", dynamic_ncols=True,
                            file=sys.stderr)

        def on_batch_end(self, trainer):
            self.bar.update(1)

        def on_log_interval(self, trainer, row):
            self.bar.set_postfix(epoch=row["epoch"], loss=f"{row['loss']:.4f}", acc=f"{row['acc']:.3f}")

        def on_epoch_end(self, trainer, rows):
            val = rows[1]
            self.bar.set_postfix(epoch=val["epoch"], val_loss=f"{val['loss']:.4f}", val_acc=f"{val['acc']:.3f}")

        def on_fit_end(self, trainer, outcome):
            self.bar.close()

        def on_exception(self, trainer, error):
            self.bar.close()      # the bar's line ends before the error is printed

    return TqdmProgress()


def _epoch_lines():
    from core.training.hooks import Callback

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)      # flushed: someone may be following the log

    class EpochLines(Callback):
        """`epoch 3/10: loss 0.4123 acc 0.871 | val_loss 0.3901 val_acc 0.889 (2.1 s)`, and where a run
        picks up or why it ends early, since the epoch count alone does not say."""

        def on_fit_start(self, trainer):
            s = trainer.state
            if s.step:        # resumed: its first epoch line covers only the batches from here
                say(f"resuming at step {s.step}/{s.total_steps}, in epoch {s.epoch + 1}/{trainer.config.epochs}")

        def on_epoch_end(self, trainer, rows):
            train, val = rows
            say(f"epoch {val['epoch']}/{trainer.config.epochs}: loss {train['loss']:.4f} acc {train['acc']:.3f} | "
                f"val_loss {val['loss']:.4f} val_acc {val['acc']:.3f} "
                f"({train['epoch_time'] + val['eval_time']:.1f} s)")

        def on_fit_end(self, trainer, outcome):
            s, config = trainer.state, trainer.config
            if s.stop_reason == "stop":
                say(f"stopped at step {s.step}/{s.total_steps}; resume continues it")
            elif s.stop_reason == "early":
                say(f"early stopping: no better {config.best_metric} for {config.early_stopping_patience} epochs")

    return EpochLines()


def _train_and_report(store: RunStore, run_id: str) -> int:
    """Train in this process; the outcome on stdout, a failure's error once on stderr."""
    from core.training.worker import run_training
    try:
        state = run_training(store, run_id, [_progress_callback()])
    except (UnreadableRun, InvalidTransition) as error:
        raise Rejected(str(error))
    status = store.read_status(run_id)
    best = status.get("best") or {}
    line = f"run {run_id}: {state}"
    if best:
        line += f", best {best['metric']} {best['value']:.4f} at epoch {best['epoch']}"
    print(line, flush=True)           # before the error: a terminal shows them in this order
    if status.get("error"):
        print(f"error: {status['error']}", file=sys.stderr)     # run_training leaves saying it to us
    return EXIT_OK if state in ("completed", "stopped") else EXIT_FAILED


def add_train(sub, parents) -> None:
    train = _add_launch_command(sub, parents, "train", "train a classifier")
    train.add_argument("--name")
    train.set_defaults(func=cmd_train)


def cmd_train(args, store: RunStore) -> int:
    config = launch_config(args)
    run_id = store.create_run(config)
    print(f"run {run_id} created in {store.root}", flush=True)
    return _train_and_report(store, run_id)


def add_check(sub, parents) -> None:
    check = _add_launch_command(sub, parents, "check",
                                "pre-flight check: one batch through the model before a run (data range, outputs, "
                                "first loss, gradients, one update, a step's time and memory, the run's length)")
    check.add_argument("--json", action="store_true", help="print the figures and findings as JSON")
    check.set_defaults(func=cmd_check)


def cmd_check(args, store: RunStore) -> int:
    """Exit 1 when a finding is an error (the run would fail or learn nothing), else 0."""
    from core.training.preflight import check_config
    report = check_config(launch_config(args))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print("\n".join(report["lines"]))
        for finding in report["findings"]:
            print(f"{finding['severity']}: {finding['code']}: {finding['message']}\n  what to try: {finding['advice']}")
        if not report["findings"]:
            print("no problem found")
    return EXIT_FAILED if any(f["severity"] == "error" for f in report["findings"]) else EXIT_OK


def add_lr_find(sub, parents) -> None:
    lr_find = _add_launch_command(sub, parents, "lr-find",
                                  "learning-rate range test: JSON with suggested_lr and the curve")
    lr_find.add_argument("--min-lr", type=float, default=1e-7)
    lr_find.add_argument("--max-lr", type=float, default=10.0)
    lr_find.add_argument("--steps", type=int, default=100)
    lr_find.set_defaults(func=cmd_lr_find)


def cmd_lr_find(args, store: RunStore) -> int:
    from tqdm import tqdm

    from core.training.lr_find import find_lr
    problems = [problem for bad, problem in (
        (not 0 < args.min_lr < args.max_lr, f"--min-lr ({args.min_lr:g}) must be above 0 and below --max-lr "
                                            f"({args.max_lr:g})"),
        (not 2 <= args.steps <= 10_000, f"--steps must be 2 to 10000, got {args.steps}")) if bad]
    try:
        config = launch_config(args)
    except Rejected as rejected:
        raise Rejected(rejected.problems + problems)     # every reason at once
    if problems:
        raise Rejected(problems)
    with tqdm(total=args.steps, unit="step", desc="lr-find", file=sys.stderr, dynamic_ncols=True) as bar:
        result = find_lr(config, min_lr=args.min_lr, max_lr=args.max_lr, steps=args.steps,
                         on_step=lambda done, total: bar.update(1))
    print(json.dumps(result, indent=1))
    return EXIT_OK


def add_runs(sub, parents) -> None:
    sub.add_parser("runs", parents=parents, help="list runs").set_defaults(func=cmd_runs)


def _fmt_duration(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def cmd_runs(args, store: RunStore) -> int:
    runs = store.list_runs()
    if not runs:
        print(f"no runs in {store.root}")
        return EXIT_OK
    header = (f"{'RUN ID':<44} {'STATE':<11} {'PROGRESS':>8} {'EPOCH':>7} {'BEST':>14} {'DURATION':>9}  "
              f"{'CREATED':<16}  TAGS")
    print(header)
    for r in runs:
        best = f"{r.best_metric.removeprefix('val_')} {r.best_value:.4f}" if r.best_value is not None else "-"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        print(f"{r.run_id:<44} {r.state:<11} {r.progress:>8.0%} {f'{r.epoch}/{r.epochs}':>7} {best:>14} "
              f"{_fmt_duration(r.duration_s):>9}  {created:<16}  {','.join(r.tags)}".rstrip())
        for line in ((r.error,) if r.state == "unreadable" else ()) + r.notes:
            print(f"    {line}")
    return EXIT_OK


def add_stop(sub, parents) -> None:
    stop = sub.add_parser("stop", parents=parents, help="stop a queued or running run (resume continues it)")
    stop.add_argument("run_id")
    stop.set_defaults(func=cmd_stop)


def cmd_stop(args, store: RunStore) -> int:
    try:
        state = store.request_stop(args.run_id)
    except InvalidTransition as error:
        raise Rejected(str(error))
    if state is None:
        raise Rejected(f"run {args.run_id} is {store.read_status(args.run_id)['state']}; only queued or running "
                       "runs can be stopped")
    print(f"run {args.run_id}: " + ("stopped (it was queued)" if state == STOPPED else
                                    "stop asked; it ends after the current batch and can be resumed"))
    return EXIT_OK


def add_delete(sub, parents) -> None:
    delete = sub.add_parser("delete", parents=parents, help="delete a run that is not queued or running")
    delete.add_argument("run_id")
    delete.add_argument("--yes", action="store_true", help="do not ask first")
    delete.set_defaults(func=cmd_delete)


def cmd_delete(args, store: RunStore) -> int:
    summary = store.summary(args.run_id)         # RunNotFound / InvalidRunId -> exit 2
    if not args.yes:
        if not sys.stdin.isatty():
            raise Rejected(f"delete {args.run_id}: add --yes to delete without being asked")
        answer = input(f"delete run {summary.label} ({summary.state}) and all its files? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_OK
    try:
        store.delete_run(args.run_id)
    except RuntimeError as error:       # active, or its lease is held (LeaseHeld): another process trains it
        raise Rejected(str(error))
    print(f"run {args.run_id} deleted")
    return EXIT_OK


def add_show(sub, parents) -> None:
    show = sub.add_parser("show", parents=parents, help="config, status and last metrics of a run")
    show.add_argument("run_id")
    show.add_argument("--config", action="store_true",
                      help="print only the run's settings, as a settings file for train --config")
    show.add_argument("--yaml", action="store_true", help="with --config: as YAML instead of JSON")
    show.set_defaults(func=cmd_show)


def cmd_show(args, store: RunStore) -> int:
    if args.yaml and not args.config:
        raise Rejected("--yaml goes with --config: show RUN_ID --config --yaml")
    if args.config:
        from core.settings_file import settings_text
        sys.stdout.write(settings_text(store.read_config(args.run_id), as_yaml=args.yaml))
        return EXIT_OK
    summary = store.summary(args.run_id)
    try:
        config, unknown = store.read_config_with_unknown(args.run_id)
        config = config.to_dict()
    except UnreadableRun:
        config, unknown = None, {}
    status = store.read_status(args.run_id)
    metrics = store.read_metrics(args.run_id)
    last = {}
    for row in metrics:
        last[(row.get("split"), row.get("kind"))] = row
    print(json.dumps({"run_id": args.run_id, "state": summary.state, "tags": list(summary.tags), "note": summary.note,
                      "problem": summary.error
                      if summary.state == "unreadable" else None, "notes": list(summary.notes),
                      "config": config, "unknown_settings": unknown, "status": status,
                      "last_metrics": {f"{split}/{kind}": row for (split, kind), row in last.items()},
                      "metric_lines": len(metrics)}, indent=2, default=str))
    return EXIT_OK


def add_resume(sub, parents) -> None:
    resume = sub.add_parser("resume", parents=parents, help="resume a stopped, interrupted or failed run")
    resume.add_argument("run_id")
    resume.set_defaults(func=cmd_resume)


def cmd_resume(args, store: RunStore) -> int:
    status = store.read_status(args.run_id)
    if status["state"] not in RESUMABLE_STATES:
        raise Rejected(f"run {args.run_id} is {status['state']}; only "
                       f"{', '.join(sorted(RESUMABLE_STATES))} runs can be resumed"
                       + (f" ({status['error']})" if status["state"] == "unreadable" else ""))
    try:
        store.runnable_config(args.run_id)
    except UnreadableRun as error:
        raise Rejected(f"run {args.run_id} cannot be resumed: {error}")
    try:
        check_not_running(store.lease_path(args.run_id), args.run_id)   # its status may be stale
    except LeaseHeld as error:
        raise Rejected(str(error))
    store.stop_path(args.run_id).unlink(missing_ok=True)
    return _train_and_report(store, args.run_id)


def add_tag(sub, parents) -> None:
    tag = sub.add_parser("tag", parents=parents, help="add or remove a run's tags (the Runs page filters by them)")
    tag.add_argument("run_id")
    tag.add_argument("--add", action="append", default=[], metavar="TAG")
    tag.add_argument("--remove", action="append", default=[], metavar="TAG")
    tag.set_defaults(func=cmd_tag)


def cmd_tag(args, store: RunStore) -> int:
    try:
        tags = set_tags(store, args.run_id, add=args.add, remove=args.remove)
    except BadAnnotation as error:
        raise Rejected(str(error))
    print(f"run {args.run_id} tags: {', '.join(tags) or '(none)'}")
    return EXIT_OK


def add_note(sub, parents) -> None:
    note = sub.add_parser("note", parents=parents, help="set a run's note (\"\" clears it; without text: print it)")
    note.add_argument("run_id")
    note.add_argument("text", nargs="?")
    note.set_defaults(func=cmd_note)


def cmd_note(args, store: RunStore) -> int:
    try:
        note = set_note(store, args.run_id, args.text) if args.text is not None else \
            read_annotations(store, args.run_id)["note"]
    except BadAnnotation as error:
        raise Rejected(str(error))
    print(note if args.text is None else f"run {args.run_id} note: {note or '(cleared)'}")
    return EXIT_OK
