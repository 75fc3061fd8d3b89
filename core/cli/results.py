"""Commands that judge a finished run: diagnose, eval, embed, tensorboard.

Each add_NAME(sub, parents) registers its command's parser right above the cmd_NAME(args, store) it runs.
"""
from __future__ import annotations

import json
import os

from core.cli.common import EXIT_OK, Rejected
from core.runs.derived import EMBEDDING_SPLITS, EVAL_SPLITS, PROJECTIONS, evaluation_files
from core.runs.layout import CHECKPOINTS
from core.runs.store import RunStore


def add_diagnose(sub, parents) -> None:
    diagnose = sub.add_parser("diagnose", parents=parents,
                              help="what is wrong with a run, in plain words (JSON: findings with code, severity, "
                                   "message, advice, evidence)")
    diagnose.add_argument("run_id")
    diagnose.set_defaults(func=cmd_diagnose)


def cmd_diagnose(args, store: RunStore) -> int:
    from core.analysis.diagnosis import diagnose_run
    findings = diagnose_run(store, args.run_id)
    print(json.dumps({"run_id": args.run_id, "state": store.read_status(args.run_id)["state"],
                      "findings": [finding.to_dict() for finding in findings]}, indent=1))
    return EXIT_OK


def add_eval(sub, parents) -> None:
    evaluate = sub.add_parser("eval", parents=parents, help="evaluate a run's checkpoint on a split")
    evaluate.add_argument("run_id")
    evaluate.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    evaluate.add_argument("--split", choices=EVAL_SPLITS, default="val")
    evaluate.add_argument("--report", metavar="FILE", help="also write the self-contained HTML report there")
    evaluate.set_defaults(func=cmd_eval)


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


def add_embed(sub, parents) -> None:
    embed = sub.add_parser("embed", parents=parents,
                           help="a checkpoint's features on a split and their 2-D map (the projector's): an npz "
                                "with features, coords, labels, preds, probs, index and classes")
    embed.add_argument("run_id")
    embed.add_argument("--split", choices=EMBEDDING_SPLITS, default="val")
    embed.add_argument("--method", choices=PROJECTIONS, default="pca",
                       help="pca (instant), tsne (openTSNE) or umap (umap-learn, when installed)")
    embed.add_argument("--checkpoint", choices=CHECKPOINTS, default="best")
    embed.add_argument("--out", metavar="FILE", help="default: RUN_ID-CHECKPOINT-SPLIT-METHOD.npz here")
    embed.set_defaults(func=cmd_embed)


def cmd_embed(args, store: RunStore) -> int:
    """Computed once per checkpoint, split and method (kept in the run folder), then written as an npz."""
    import sys
    import time

    import numpy as np

    from core.analysis.projection import METHOD_LABELS, embedding_map, missing
    from core.data.folders import DatasetError
    store.existing_run_dir(args.run_id)          # RunNotFound / InvalidRunId -> exit 2
    if missing(args.method):
        raise Rejected(f"{METHOD_LABELS[args.method]} needs a library that is not installed: {missing(args.method)}")
    out = args.out or f"{args.run_id}-{args.checkpoint}-{args.split}-{args.method}.npz"
    started = time.perf_counter()
    print(f"mapping {args.split} of {args.run_id} ({args.checkpoint}.pt) by {METHOD_LABELS[args.method]}…",
          file=sys.stderr, flush=True)
    try:
        coords, arrays, record = embedding_map(store, args.run_id, args.checkpoint, args.split, args.method)
    except (FileNotFoundError, ValueError, DatasetError) as error:     # ValueError: NoEmbedding, too few points
        raise Rejected(str(error))
    try:
        np.savez(out, features=arrays["features"], coords=coords, labels=arrays["labels"],
                 preds=arrays["probs"].argmax(1), probs=arrays["probs"], index=arrays["index"],
                 classes=np.array(record["classes"]))
    except OSError as error:
        raise Rejected(f"cannot write {out}: {error.strerror or error}")
    print(f"{len(coords):,} points, {arrays['features'].shape[1]} features, {METHOD_LABELS[args.method]} map "
          f"({time.perf_counter() - started:.1f} s, kept in the run folder for next time); wrote {out}")
    return EXIT_OK


def add_tensorboard(sub, parents) -> None:
    tensorboard = sub.add_parser("tensorboard", parents=parents,
                                 help="write TensorBoard event files: metrics, probe histograms, settings")
    tensorboard.add_argument("run_id")
    tensorboard.add_argument("--out", metavar="DIR", help="default: the run folder's tensorboard/ (replaced)")
    tensorboard.set_defaults(func=cmd_tensorboard)


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
