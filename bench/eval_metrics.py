"""The evaluation report for 1,000,000 predictions x 10 classes: core.analysis.metrics against scikit-learn's
per-class functions computing the same figures on the same arrays.

    .venv/bin/python bench/eval_metrics.py [--samples 1000000] [--classes 10] [--repeat 3]

Ours is timed --repeat times (median; the VM is shared and noisy), scikit-learn once (it takes ~17 s).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sklearn import metrics as sk  # noqa: E402

from core.analysis.metrics import classification_report  # noqa: E402

TARGET_S = 1.5     # the whole report for 1,000,000 x 10, on this project's 2-core VM


def with_sklearn(probs, labels, c):
    predicted = probs.argmax(1)
    onehot = np.eye(c, dtype=bool)[labels]
    figures = {"confusion": sk.confusion_matrix(labels, predicted, labels=range(c)),
               "prf": sk.precision_recall_fscore_support(labels, predicted, labels=range(c), zero_division=0),
               "loss": sk.log_loss(labels, probs, labels=range(c))}
    for k in range(c):
        figures[f"auc{k}"] = sk.roc_auc_score(onehot[:, k], probs[:, k])
        figures[f"ap{k}"] = sk.average_precision_score(onehot[:, k], probs[:, k])
        sk.precision_recall_curve(onehot[:, k], probs[:, k])     # for the max-F1 threshold
    figures["micro_auc"] = sk.roc_auc_score(onehot, probs, average="micro")
    figures["micro_ap"] = sk.average_precision_score(onehot, probs, average="micro")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = rng.integers(0, args.classes, args.samples)
    logits = rng.normal(size=(args.samples, args.classes)).astype(np.float32) + 2 * np.eye(args.classes)[labels]
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        report = classification_report(probs, labels, [str(k) for k in range(args.classes)])
        times.append(time.perf_counter() - start)
    ours = float(np.median(times))
    start = time.perf_counter()
    reference = with_sklearn(probs, labels, args.classes)
    theirs = time.perf_counter() - start
    assert report["confusion_matrix"] == reference["confusion"].tolist()
    for k, row in enumerate(report["per_class"]):
        assert abs(row["f1"] - reference["prf"][2][k]) < 1e-9
        assert abs(row["roc_auc"] - reference[f"auc{k}"]) < 1e-9
        assert abs(row["average_precision"] - reference[f"ap{k}"]) < 1e-9
    assert abs(report["micro"]["roc_auc"] - reference["micro_auc"]) < 1e-9
    assert abs(report["micro"]["average_precision"] - reference["micro_ap"]) < 1e-9
    print(f"{args.samples:,} predictions x {args.classes} classes")
    print(f"core.analysis.metrics.classification_report (every figure of report.json): {ours:6.2f} s "
          f"(median of {', '.join(f'{t:.2f}' for t in times)})")
    print(f"scikit-learn per-class functions (same figures):                  {theirs:6.2f} s")
    print(f"ratio sklearn/ours = {theirs / ours:.2f}x")
    print(f"target <= {TARGET_S} s: {'met' if ours <= TARGET_S else 'NOT met'} ({ours / TARGET_S:.2f} of the target)")


if __name__ == "__main__":
    main()
