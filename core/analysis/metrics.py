"""Classification figures from (probs [N, C], labels [N]), vectorised with NumPy.

Each figure is defined as scikit-learn defines it (tests/test_metrics.py checks them against it on
the same arrays, ties in scores included). A class absent from the labels has no ROC AUC or average
precision (None), a class that is every label no ROC AUC, as in scikit-learn, where it would warn or
fail; macro averages are over the classes that have one.

Why it is fast (1,000,000 x 10 float32 predictions in ~0.7 s on the project's 2-core VM, 5 s with an
argsort and a curve per class): ROC AUC, average precision and the best-F1 threshold only change at
the scores of the positives, so they need, for each distinct positive score u, how many positives
score u and how many of all scores lie below and at u. That is two plain (unstable, SIMD) sorts - all
scores, positives' scores - and two binary searches of the distinct positive scores into the sorted
scores; no argsort, no gather, no curve over every score. The micro average works the same way on
the 10M flattened scores, whose positives are the 1M true-class scores.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class_prf(confusion: np.ndarray) -> dict:
    """Precision, recall, F1 and support per class, plus macro and weighted averages
    (zero_division=0, like scikit-learn's default)."""
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(0).astype(float)
    support = confusion.sum(1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(tp), where=total > 0)
    weights = support / max(support.sum(), 1)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int),
            "macro": {"precision": precision.mean(), "recall": recall.mean(), "f1": f1.mean()},
            "weighted": {"precision": (precision * weights).sum(), "recall": (recall * weights).sum(),
                         "f1": (f1 * weights).sum()}}


def _binary_curve_points(scores: np.ndarray, positives: np.ndarray):
    """Cumulative TP and FP at each distinct score, highest first (the thresholds of roc_curve), for
    drawing. Ties are grouped by distinct score, so an unstable sort is enough."""
    order = np.argsort(scores)[::-1]
    scores, positives = scores[order], positives[order]
    ends = np.r_[np.flatnonzero(scores[1:] != scores[:-1]), len(scores) - 1]
    tps = np.cumsum(positives)[ends]
    fps = (ends + 1) - tps
    return tps.astype(float), fps.astype(float), scores[ends]


def _ranked_figures(sorted_scores: np.ndarray, sorted_positive_scores: np.ndarray) -> dict:
    """ROC AUC, average precision and best-F1 threshold from all scores and the positives' scores,
    both sorted ascending. Only thresholds at a positive's score matter:
    - AP = sum over thresholds of (recall step) * precision, and recall only steps at positive scores;
    - AUC = P(positive > negative) + P(tie) / 2 (the Mann-Whitney statistic, which equals the area
      under the trapezoidal ROC curve), counted exactly in integers;
    - F1 only falls when a threshold adds negatives alone, so its maximum is at a positive score."""
    n, n_pos = len(sorted_scores), len(sorted_positive_scores)
    if n_pos == 0:
        return {"roc_auc": None, "average_precision": None, "best_f1_threshold": None}
    # Distinct positive scores u (ascending); `first` = how many positives score below u.
    first = np.flatnonzero(np.r_[True, sorted_positive_scores[1:] != sorted_positive_scores[:-1]])
    u = sorted_positive_scores[first]
    at_u = np.diff(np.r_[first, n_pos])                         # positives scoring exactly u
    below = np.searchsorted(sorted_scores, u, side="left")     # all scores < u
    equal = np.searchsorted(sorted_scores, u, side="right") - below
    tp = n_pos - first                                          # positives >= u
    predicted = n - below                                       # all >= u
    auc = None
    if n > n_pos:
        negatives_below, negatives_equal = below - first, equal - at_u
        twice_u_statistic = int(np.dot(at_u, 2 * negatives_below + negatives_equal))
        auc = twice_u_statistic / (2 * n_pos * (n - n_pos))
    precision = tp / predicted
    recall = tp / n_pos
    ap = float(np.dot(at_u, precision)) / n_pos
    f1 = 2 * precision * recall / (precision + recall)          # tp >= 1 at every u, so no 0/0
    best = len(f1) - 1 - int(np.argmax(f1[::-1]))              # highest threshold among equal maxima
    return {"roc_auc": auc, "average_precision": ap,
            "best_f1_threshold": {"threshold": float(u[best]), "f1": float(f1[best]),
                                  "precision": float(precision[best]), "recall": float(recall[best])}}


def binary_figures(scores: np.ndarray, positives: np.ndarray) -> dict:
    """ROC AUC, average precision and the F1-maximising threshold of one class."""
    scores, positives = np.asarray(scores), np.asarray(positives, dtype=bool)
    return _ranked_figures(np.sort(scores), np.sort(scores[positives]))


def roc_curve(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) points, for drawing."""
    tps, fps, _ = _binary_curve_points(scores, positives)
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def pr_curve(scores: np.ndarray, positives: np.ndarray):
    """(precision, recall, thresholds) at each distinct score, highest score first, for drawing."""
    tps, fps, thresholds = _binary_curve_points(scores, positives)
    return tps / (tps + fps), tps / max(tps[-1], 1), thresholds


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> tuple[float, list[dict]]:
    """ECE over equal-width confidence bins, and the bins themselves (for a reliability diagram)."""
    probs = np.asarray(probs)
    predicted = probs.argmax(1)
    return _calibration(probs[np.arange(len(probs)), predicted], predicted == labels, bins)


def _calibration(confidence: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float, list[dict]]:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    table, ece = [], 0.0
    for b in range(bins):
        if count[b]:
            accuracy, mean_conf = correct_sum[b] / count[b], conf_sum[b] / count[b]
            ece += abs(accuracy - mean_conf) * count[b] / len(correct)
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(count[b]),
                          "accuracy": float(accuracy), "confidence": float(mean_conf)})
    return float(ece), table


def classification_report(probs: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Every figure of the evaluation report, JSON-ready."""
    probs = np.asarray(probs)
    labels = np.asarray(labels, dtype=np.int64)
    n, c = probs.shape
    predicted = probs.argmax(1)
    confusion = confusion_matrix(labels, predicted, c)
    prf = per_class_prf(confusion)
    # One contiguous row of scores per class: the positives of class k are picked from it, then the
    # rows are sorted in place (a strided column would be copied at each step).
    scores = np.ascontiguousarray(probs.T)
    positives = [np.sort(scores[k][labels == k]) for k in range(c)]
    scores.sort(axis=1)
    figures = [_ranked_figures(scores[k], positives[k]) for k in range(c)]
    aucs = [f["roc_auc"] for f in figures]
    aps = [f["average_precision"] for f in figures]
    thresholds = [f["best_f1_threshold"] for f in figures]
    # Micro average: every (sample, class) score, whose positives are the true-class scores. Merging the
    # sorted rows (stable sort = timsort) measured 2x slower than a plain SIMD sort of all 10M scores.
    true_scores = probs[np.arange(n), labels]
    micro = _ranked_figures(np.sort(probs, axis=None), np.sort(true_scores))
    defined_auc = [a for a in aucs if a is not None]
    defined_ap = [a for a in aps if a is not None]
    loss = float(-np.log(np.clip(true_scores.astype(np.float64), 1e-15, 1)).mean()) if n else 0.0
    ece, reliability = _calibration(probs[np.arange(n), predicted], predicted == labels, 15)
    return {
        "samples": int(n), "classes": list(class_names), "accuracy": float((predicted == labels).mean()) if n else 0.0,
        "loss": loss,
        "per_class": [{"class": class_names[k], "precision": float(prf["precision"][k]),
                       "recall": float(prf["recall"][k]), "f1": float(prf["f1"][k]),
                       "support": int(prf["support"][k]), "roc_auc": aucs[k], "average_precision": aps[k],
                       "best_f1_threshold": thresholds[k]} for k in range(c)],
        "macro": {**{k: float(v) for k, v in prf["macro"].items()},
                  "roc_auc": float(np.mean(defined_auc)) if defined_auc else None,
                  "average_precision": float(np.mean(defined_ap)) if defined_ap else None},
        "weighted": {k: float(v) for k, v in prf["weighted"].items()},
        "micro": {"roc_auc": micro["roc_auc"], "average_precision": micro["average_precision"]},
        "confusion_matrix": confusion.tolist(),
        "expected_calibration_error": ece, "reliability": reliability,
    }


def curves(probs: np.ndarray, labels: np.ndarray) -> dict:
    """ROC and PR points per class, plus micro and macro ROC, for drawing.

    Macro ROC averages the per-class TPR on a common FPR grid (as scikit-learn's examples do).
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    c = probs.shape[1]
    onehot = labels[:, None] == np.arange(c)[None, :]
    roc, pr = {}, {}
    grid = np.linspace(0, 1, 201)
    tpr_on_grid = []
    for k in range(c):
        if not onehot[:, k].any() or onehot[:, k].all():
            continue
        fpr, tpr = roc_curve(probs[:, k], onehot[:, k])
        roc[k] = (fpr, tpr)
        tpr_on_grid.append(np.interp(grid, fpr, tpr))
        precision, recall, _ = pr_curve(probs[:, k], onehot[:, k])
        pr[k] = (np.r_[0.0, recall], np.r_[1.0, precision])
    micro = roc_curve(probs.ravel(), onehot.ravel())
    macro = (grid, np.mean(tpr_on_grid, axis=0)) if tpr_on_grid else (grid, grid)
    return {"roc": roc, "pr": pr, "roc_micro": micro, "roc_macro": macro}
