"""Command line: `python -m core train|lr-find|runs|show|resume|stop|delete|diagnose|tensorboard|eval|export|
predict|serve|import-data|delete-data|tag|note` on the same run store as the app.

Exit codes: 0 success, 1 the run failed, 2 rejected input (the reasons on stderr; for import-data the
whole upload refused, nothing written), 3 some files were refused and the rest done (predict;
import-data, which names each refused file and its reason on stderr), 141 the reader of the output
went away (`runs | head`), quietly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from core.config import DATASETS, SETTINGS, ConfigError, RunConfig, settings_help
from core.runs.lease import LeaseHeld, check_not_running
from core.runs.states import RESUMABLE_STATES, STOPPED, InvalidTransition
from core.runs.annotations import BadAnnotation
from core.runs.derived import EVAL_SPLITS, QUANTIZE_KINDS, SERVING_BACKENDS
from core.runs.layout import CHECKPOINTS, InvalidRunId, RunNotFound, default_runs_dir
from core.runs.status import UnreadableRun
from core.runs.store import RunStore

EXIT_OK, EXIT_FAILED, EXIT_REJECTED, EXIT_REFUSED_FILES = 0, 1, 2, 3
EXIT_PIPE_CLOSED = 128 + 13     # what a shell reports for a program ended by SIGPIPE


class Rejected(Exception):
    """Bad input: printed to stderr, exit code 2, nothing written."""

    def __init__(self, problems):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


def _progress_callback(total_steps_hint: int):
    from tqdm import tqdm
    from core.training.trainer import Callback

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


def _train_and_report(store: RunStore, run_id: str) -> int:
    """Train in this process; the outcome on stdout, a failure's error once on stderr."""
    from core.training.worker import run_training
    try:
        state = run_training(store, run_id, [_progress_callback(0)])
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


def launch_config(args) -> RunConfig:
    """The RunConfig that --dataset, the shortcuts and --set describe, checked as a launch is
    (settings and data); Rejected with every problem."""
    from core.data.datasets import validate_run_config
    overrides = {k: v for k, v in (("model", args.model), ("epochs", args.epochs), ("lr", args.lr),
                                   ("data_path", args.data), ("name", getattr(args, "name", None)))
                 if v is not None}
    # --batch-size takes what --set batch_size= takes: a number or "auto".
    updates = ([f"batch_size={args.batch_size}"] if args.batch_size is not None else []) + (args.set or [])
    try:
        config = RunConfig.for_dataset(args.dataset, **overrides).with_updates(updates)
    except (ConfigError, TypeError) as error:
        raise Rejected(getattr(error, "problems", [str(error)]))
    problems = validate_run_config(config)
    if problems:
        raise Rejected(problems)
    return config


def cmd_train(args, store: RunStore) -> int:
    config = launch_config(args)
    run_id = store.create_run(config)
    print(f"run {run_id} created in {store.root}", flush=True)
    return _train_and_report(store, run_id)


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
    header = f"{'RUN ID':<44} {'STATE':<11} {'PROGRESS':>8} {'EPOCH':>7} {'BEST':>14} {'DURATION':>9}  {'CREATED':<16}  TAGS"
    print(header)
    for r in runs:
        best = f"{r.best_metric.removeprefix('val_')} {r.best_value:.4f}" if r.best_value is not None else "-"
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        print(f"{r.run_id:<44} {r.state:<11} {r.progress:>8.0%} {f'{r.epoch}/{r.epochs}':>7} {best:>14} "
              f"{_fmt_duration(r.duration_s):>9}  {created:<16}  {','.join(r.tags)}".rstrip())
        for line in ((r.error,) if r.state == "unreadable" else ()) + r.notes:
            print(f"    {line}")
    return EXIT_OK


def cmd_show(args, store: RunStore) -> int:
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


def cmd_eval(args, store: RunStore) -> int:
    from core.analysis.evaluate import evaluate_run
    store.existing_run_dir(args.run_id)     # RunNotFound / InvalidRunId -> exit 2
    try:
        report, _ = evaluate_run(store, args.run_id, args.checkpoint, args.split)
    except (FileNotFoundError, ValueError) as error:
        raise Rejected(str(error))
    macro = report["macro"]
    auc = f"{macro['roc_auc']:.4f}" if macro["roc_auc"] is not None else "-"
    print(f"{args.run_id} {args.checkpoint}.pt on {args.split} ({report['samples']} samples, epoch "
          f"{report['epoch']}): accuracy {report['accuracy']:.4f}  loss {report['loss']:.4f}  "
          f"macro F1 {macro['f1']:.4f}  macro ROC AUC {auc}  ECE {report['expected_calibration_error']:.4f}")
    print(f"{'class':<16} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for row in report["per_class"]:
        print(f"{row['class'][:16]:<16} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} "
              f"{row['support']:>8}")
    print(f"report: {evaluation_files(store, args.run_id, args.checkpoint, args.split).path('report')}")
    if args.report:
        from core.analysis.report import evaluation_html
        text = evaluation_html(store, args.run_id, args.checkpoint, args.split)
        try:
            with open(args.report, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as error:
            raise Rejected(f"cannot write the HTML report to {args.report}: {error.strerror or error}")
        print(f"HTML report: {args.report} ({os.path.getsize(args.report) / 1024**2:.1f} MB)")
    return EXIT_OK


def _predictor(args, store: RunStore):
    from core.serving.inference import Predictor
    store.existing_run_dir(args.run_id)     # RunNotFound / InvalidRunId -> exit 2
    try:
        return Predictor(store, args.run_id, backend=args.backend)
    except (FileNotFoundError, ValueError) as error:
        raise Rejected(str(error))


def cmd_predict(args, store: RunStore) -> int:
    """One JSON object per line per file, a refused file's included; exit 3 when some were refused."""
    from core.data.images import ImageRefused, read_image_file
    predictor = _predictor(args, store)
    refused = 0
    for name in args.files:
        try:
            result = predictor.predict(read_image_file(name), top_k=args.top_k)
        except ImageRefused as error:       # missing, unreadable or too large a file
            result = {"error": str(error)}
        refused += "error" in result
        print(json.dumps({"file": name, **result}), flush=True)
    return EXIT_REFUSED_FILES if refused else EXIT_OK


def cmd_export(args, store: RunStore) -> int:
    from core.serving.export import ExportError, export_run
    store.existing_run_dir(args.run_id)
    try:
        report = export_run(store, args.run_id, quantize=args.quantize, torchscript=args.torchscript)
    except (FileNotFoundError, ValueError) as error:     # ValueError: best.pt is not a checkpoint we read
        raise Rejected(str(error))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    parity = report["parity_max_abs_diff"]
    print(f"parity check: max abs difference ONNX vs torch {parity['random']:.2e} (random inputs), "
          f"{parity['real']:.2e} (val inputs); tolerance {report['tolerance']:g}: ok")
    for name, variant in report["variants"].items():
        print(f"{name:<17} {variant['file']:<24} {variant['size_mb']:8.2f} MB   val acc {variant['val_acc']:.4f}")
    return EXIT_OK


def cmd_serve(args, store: RunStore) -> int:
    from core.serving.service import Limits, listen, serve
    given = {"concurrency": args.concurrency, "body_timeout_s": args.body_timeout}
    limits = Limits(max_bytes=args.max_mb * 1024 * 1024, **{k: v for k, v in given.items() if v is not None})
    if limits.concurrency < 1 or limits.body_timeout_s <= 0 or args.max_mb < 1:
        raise Rejected("--concurrency, --body-timeout and --max-mb must be positive")
    try:
        listener = listen(args.host, args.port)       # before the model loads: a bad port fails at once
    except ValueError as error:
        raise Rejected(str(error))
    with listener:
        predictor = _predictor(args, store)
        host, port = listener.getsockname()[:2]
        print(f"serving {args.run_id} ({args.backend}) on http://{host}:{port}: POST /predict "
              f"(multipart field 'file'), GET /health; {limits.concurrency} predictions at once, "
              f"{limits.max_in_flight} requests in flight", flush=True)
        serve(predictor, args.run_id, listener, limits)
    return EXIT_OK


def cmd_tensorboard(args, store: RunStore) -> int:
    from core.analysis.tensorboard_export import export_tensorboard
    try:
        result = export_tensorboard(store, args.run_id, args.out)
    except ValueError as error:         # --out holds files that are not an earlier export
        raise Rejected(str(error))
    print(f"wrote {result.scalars} scalars, {result.histograms} histograms and {result.hparams} settings as "
          f"hparams to {result.folder}")
    for note in result.notes:
        print(note)
    print(f"view them with: tensorboard --logdir {result.folder}")
    return EXIT_OK


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


def cmd_diagnose(args, store: RunStore) -> int:
    from core.analysis.diagnosis import diagnose_run
    findings = diagnose_run(store, args.run_id)
    print(json.dumps({"run_id": args.run_id, "state": store.read_status(args.run_id)["state"],
                      "findings": [finding.to_dict() for finding in findings]}, indent=1))
    return EXIT_OK


def cmd_import_data(args, store: RunStore) -> int:
    from core.data.uploads import UploadRefused, datasets_dir, import_zip
    try:
        result = import_zip(args.zip, datasets_dir(store.root), args.name, add=args.add)
    except UploadRefused as error:
        raise Rejected(str(error))
    print(result.describe())
    for name, count in result.counts.items():
        print(f"  {name}: {count:,} images" + (f" ({result.added[name]:,} new)" if not result.created
                                                and name in result.added else ""))
    for refusal in result.refused:
        print(f"not imported: {refusal.path}: {refusal.reason}", file=sys.stderr)
    print(f"train on it with: python -m core train --dataset image-folder --data {result.path}")
    return EXIT_REFUSED_FILES if result.refused else EXIT_OK


def cmd_delete_data(args, store: RunStore) -> int:
    from core.data.uploads import (DatasetRefused, datasets_dir, delete_dataset, existing_dataset, remove_class,
                              remove_images, removable_class)
    root = datasets_dir(store.root)
    one_class = args.class_name is not None
    try:
        dataset = removable_class(root, args.name, args.class_name) if one_class else existing_dataset(root, args.name)
        if not args.yes:
            what = (f"class {args.class_name} ({dataset.counts[args.class_name]:,} images) of dataset {dataset.name}"
                    if one_class else f"{len(args.images)} image(s) of dataset {dataset.name}" if args.images
                    else f"dataset {dataset.name} ({len(dataset.counts)} classes, {dataset.images:,} images)")
            if not sys.stdin.isatty():
                raise Rejected(f"delete-data {args.name}: add --yes to delete without being asked")
            answer = input(f"delete {what} in {dataset.path}? Runs trained on it stay, but evaluating or resuming "
                           "them needs the data. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return EXIT_OK
        if args.images:
            dataset, removed = remove_images(root, args.name, args.images, store)
            print(f"{removed:,} image(s) of dataset {dataset.name} deleted; {dataset.images:,} images left")
            return EXIT_OK
        if one_class:
            dataset, removed = remove_class(root, args.name, args.class_name, store)
            print(f"class {args.class_name} of dataset {dataset.name} deleted ({removed:,} images); "
                  f"{len(dataset.counts)} classes and {dataset.images:,} images left")
            return EXIT_OK
        dataset = delete_dataset(root, args.name, store)
    except DatasetRefused as error:
        raise Rejected(str(error))
    print(f"dataset {dataset.name} deleted ({dataset.images:,} images)")
    return EXIT_OK


def cmd_tag(args, store: RunStore) -> int:
    try:
        tags = set_tags(store, args.run_id, add=args.add, remove=args.remove)
    except BadAnnotation as error:
        raise Rejected(str(error))
    print(f"run {args.run_id} tags: {', '.join(tags) or '(none)'}")
    return EXIT_OK


def cmd_note(args, store: RunStore) -> int:
    try:
        note = set_note(store, args.run_id, args.text) if args.text is not None else \
            read_annotations(store, args.run_id)["note"]
    except BadAnnotation as error:
        raise Rejected(str(error))
    print(note if args.text is None else f"run {args.run_id} note: {note or '(cleared)'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--runs", default=None, help="runs folder (default: $TRAINBOARD_RUNS or ./runs)")
    parser = argparse.ArgumentParser(prog="python -m core", description="Trainboard from the command line")
    sub = parser.add_subparsers(dest="command", required=True)

    launch = argparse.ArgumentParser(add_help=False)      # what describes a run's config
    launch.add_argument("--dataset", default="digits", help=f"one of {', '.join(DATASETS)}")
    launch.add_argument("--model", help=SETTINGS["model"].rule())
    launch.add_argument("--epochs", type=int)
    launch.add_argument("--batch-size", help=SETTINGS["batch_size"].rule())
    launch.add_argument("--lr", type=float)
    launch.add_argument("--data", help="folder of images (image-folder, csv-folder)")
    launch.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any RunConfig setting, e.g. --set optimizer=sgd --set aug_flip=true")
    settings_epilog = ("settings for --set KEY=VALUE (the defaults shown are digits'; each dataset has its own "
                       "starting points):\n" + settings_help())
    train = sub.add_parser("train", parents=[common, launch], help="train a classifier",
                           formatter_class=argparse.RawDescriptionHelpFormatter, epilog=settings_epilog)
    train.add_argument("--name")
    train.set_defaults(func=cmd_train)
    lr_find = sub.add_parser("lr-find", parents=[common, launch],
                             help="learning-rate range test: JSON with suggested_lr and the curve",
                             formatter_class=argparse.RawDescriptionHelpFormatter, epilog=settings_epilog)
    lr_find.add_argument("--min-lr", type=float, default=1e-7)
    lr_find.add_argument("--max-lr", type=float, default=10.0)
    lr_find.add_argument("--steps", type=int, default=100)
    lr_find.set_defaults(func=cmd_lr_find)

    runs = sub.add_parser("runs", parents=[common], help="list runs")
    runs.set_defaults(func=cmd_runs)
    stop = sub.add_parser("stop", parents=[common], help="stop a queued or running run (resume continues it)")
    stop.add_argument("run_id")
    stop.set_defaults(func=cmd_stop)
    delete = sub.add_parser("delete", parents=[common], help="delete a run that is not queued or running")
    delete.add_argument("run_id")
    delete.add_argument("--yes", action="store_true", help="do not ask first")
    delete.set_defaults(func=cmd_delete)
    for name, func, text in (("show", cmd_show, "config, status and last metrics of a run"),
                             ("resume", cmd_resume, "resume a stopped, interrupted or failed run")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("run_id")
        p.set_defaults(func=func)
    diagnose = sub.add_parser("diagnose", parents=[common],
                              help="what is wrong with a run, in plain words (JSON: findings with code, severity, "
                                   "message, advice, evidence)")
    diagnose.add_argument("run_id")
    diagnose.set_defaults(func=cmd_diagnose)
    evaluate = sub.add_parser("eval", parents=[common], help="evaluate a run's checkpoint on a split")
    evaluate.add_argument("run_id")
    evaluate.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    evaluate.add_argument("--split", choices=EVAL_SPLITS, default="val")
    evaluate.add_argument("--report", metavar="FILE", help="also write the self-contained HTML report there")
    evaluate.set_defaults(func=cmd_eval)
    export = sub.add_parser("export", parents=[common], help="export best.pt to ONNX (and int8, TorchScript)")
    export.add_argument("run_id")
    export.add_argument("--quantize", nargs="?", const="dynamic", choices=QUANTIZE_KINDS,
                        help="also write an int8 model: dynamic (weights) or static (weights and activations, "
                             "calibrated on training images; fastest on CPU)")
    export.add_argument("--torchscript", action="store_true", help="also write model.ts.pt")
    export.set_defaults(func=cmd_export)
    predict = sub.add_parser("predict", parents=[common], help="top-k classes of image files")
    predict.add_argument("run_id")
    predict.add_argument("files", nargs="+", metavar="FILE")
    predict.add_argument("--top-k", type=int, default=5)
    predict.add_argument("--backend", choices=tuple(SERVING_BACKENDS), default="torch")
    predict.set_defaults(func=cmd_predict)
    serve = sub.add_parser("serve", parents=[common], help="HTTP prediction service (ONNX Runtime)")
    serve.add_argument("run_id")
    serve.add_argument("--port", default="8000", help="1-65535 (checked before the model loads)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--backend", choices=tuple(SERVING_BACKENDS), default="onnx")
    serve.add_argument("--max-mb", type=int, default=10, help="request size limit in MB")
    serve.add_argument("--concurrency", type=int, help="predictions at once (default: the CPU count); "
                                                         "twice as many more may wait, beyond that 503")
    serve.add_argument("--body-timeout", type=float, metavar="SECONDS",
                       help="408 for a request whose body takes longer to arrive (default 10)")
    serve.set_defaults(func=cmd_serve)
    tensorboard = sub.add_parser("tensorboard", parents=[common],
                                 help="write TensorBoard event files: metrics, probe histograms, settings")
    tensorboard.add_argument("run_id")
    tensorboard.add_argument("--out", metavar="DIR", help="default: the run folder's tensorboard/ (replaced)")
    tensorboard.set_defaults(func=cmd_tensorboard)
    import_data = sub.add_parser("import-data", parents=[common],
                                 help="import a zip of class folders as an image-folder dataset in the managed "
                                      "data folder ($TRAINBOARD_DATASETS, default: the runs folder's .datasets)")
    import_data.add_argument("zip", metavar="ZIP")
    import_data.add_argument("--name", required=True, help="the dataset's name: letters, digits, - _ .")
    import_data.add_argument("--add", action="store_true", help="add to the dataset if it exists")
    import_data.set_defaults(func=cmd_import_data)
    delete_data = sub.add_parser("delete-data", parents=[common],
                                 help="delete a dataset imported with import-data or on the Datasets page, or "
                                      "one of its classes (not while a queued or running run trains on it)")
    delete_data.add_argument("name", metavar="NAME")
    part = delete_data.add_mutually_exclusive_group()
    part.add_argument("--class", dest="class_name", metavar="CLASS", help="delete only this class, its folder and images")
    part.add_argument("--image", dest="images", action="append", metavar="CLASS/FILE",
                      help="delete only this image (relative to the dataset's folder, e.g. cat/3.png); repeatable")
    delete_data.add_argument("--yes", action="store_true", help="do not ask first")
    delete_data.set_defaults(func=cmd_delete_data)
    tag = sub.add_parser("tag", parents=[common], help="add or remove a run's tags (the Runs page filters by them)")
    tag.add_argument("run_id")
    tag.add_argument("--add", action="append", default=[], metavar="TAG")
    tag.add_argument("--remove", action="append", default=[], metavar="TAG")
    tag.set_defaults(func=cmd_tag)
    note = sub.add_parser("note", parents=[common], help="set a run's note (\"\" clears it; without text: print it)")
    note.add_argument("run_id")
    note.add_argument("text", nargs="?")
    note.set_defaults(func=cmd_note)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_REJECTED if exit_.code else EXIT_OK
    store = RunStore(args.runs if args.runs else default_runs_dir())
    try:
        code = args.func(args, store)
        sys.stdout.flush()      # a closed pipe shows here, not as a complaint at exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except Rejected as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_REJECTED
    except (RunNotFound, InvalidRunId, UnreadableRun) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return EXIT_REJECTED


def _reader_went_away() -> int:
    """`python -m core runs | head -1`: the reader closed the pipe. End quietly, as `ls | head` does:
    later writes (Python's own flush at exit included) go to /dev/null instead of raising."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass        # stdout is not a file (tests capture it): nothing is left to flush anyway
    return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
