"""Every figure of core.analysis.metrics against scikit-learn on the same arrays."""
import numpy as np
import pytest
from sklearn import metrics as sk

from core.analysis.metrics import binary_figures, classification_report, curves


def random_case(n=2000, c=5, seed=0, absent=None, ties=False, decimals=None, dtype=np.float64, only=None):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n) if only is None else np.full(n, only)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % c
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels]
    if ties:
        logits = np.round(logits, 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if decimals is not None:
        # Scores stored with 2 decimals: hundreds of samples share each score. At least 0.01, so that
        # log loss's clipping (1e-15 here, machine epsilon in scikit-learn) plays no part.
        probs = np.maximum(np.round(probs, decimals), 10.0 ** -decimals)
    return probs.astype(dtype), labels


def close(expected):
    return pytest.approx(expected, rel=0, abs=1e-9)


CASES = {"random": dict(), "rounded logits": dict(seed=3, ties=True), "class absent": dict(absent=2),
         "binary": dict(c=2, seed=5), "float32": dict(seed=7, dtype=np.float32),
         "probs with 2 decimals": dict(seed=11, decimals=2),
         "probs with 2 decimals, float32": dict(seed=13, c=10, n=5000, decimals=2, dtype=np.float32),
         "all one class": dict(seed=17, c=3, only=1)}


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_report_agrees_with_scikit_learn(case):
    probs, labels = random_case(**case)
    c = probs.shape[1]
    report = classification_report(probs, labels, [f"c{k}" for k in range(c)])
    predicted = probs.argmax(1)
    everything = list(range(c))
    assert report["accuracy"] == close(sk.accuracy_score(labels, predicted))
    # scikit-learn sums the log loss in the scores' dtype (float32 here and there), the report in float64
    assert report["loss"] == close(sk.log_loss(labels, probs.astype(np.float64), labels=everything))
    assert report["confusion_matrix"] == sk.confusion_matrix(labels, predicted, labels=everything).tolist()
    p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, labels=everything, zero_division=0)
    assert [row["precision"] for row in report["per_class"]] == close(p)
    assert [row["recall"] for row in report["per_class"]] == close(r)
    assert [row["f1"] for row in report["per_class"]] == close(f)
    assert [row["support"] for row in report["per_class"]] == s.tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(labels, predicted, labels=everything, average=average,
                                                        zero_division=0)
        assert (report[average]["precision"], report[average]["recall"], report[average]["f1"]) == close((p, r, f))
    onehot = np.eye(c)[labels]
    present = [k for k in everything if onehot[:, k].any()]          # has an average precision
    ranked = [k for k in present if not onehot[:, k].all()]          # has an ROC AUC too
    for k in everything:
        row = report["per_class"][k]
        if k in ranked:
            assert row["roc_auc"] == close(sk.roc_auc_score(onehot[:, k], probs[:, k]))
        else:
            assert row["roc_auc"] is None
        if k in present:
            assert row["average_precision"] == close(sk.average_precision_score(onehot[:, k], probs[:, k]))
            precision, recall, thresholds = sk.precision_recall_curve(onehot[:, k], probs[:, k])
            f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                           where=precision + recall > 0)[:-1]
            best = np.flatnonzero(f1 == f1.max())[-1]                  # thresholds increase: the highest
            assert row["best_f1_threshold"] == close({"threshold": thresholds[best], "f1": f1[best],
                                                      "precision": precision[best], "recall": recall[best]})
        else:
            assert row["average_precision"] is None and row["best_f1_threshold"] is None
    assert report["micro"]["roc_auc"] == close(sk.roc_auc_score(onehot, probs, average="micro"))
    assert report["micro"]["average_precision"] == close(sk.average_precision_score(onehot, probs, average="micro"))
    if ranked:
        assert report["macro"]["roc_auc"] == close(np.mean([sk.roc_auc_score(onehot[:, k], probs[:, k])
                                                            for k in ranked]))
    else:
        assert report["macro"]["roc_auc"] is None
    assert report["macro"]["average_precision"] == close(
        np.mean([sk.average_precision_score(onehot[:, k], probs[:, k]) for k in present]))


def test_ties_are_grouped_by_score():
    """Positives at 0.9, 0.3, 0.3 and negatives at 0.3, 0.3: a tied pair counts half for the AUC, and a
    threshold adds all the samples at its score at once."""
    figures = binary_figures(np.array([0.3, 0.3, 0.3, 0.3, 0.9]), np.array([1, 0, 1, 0, 1], bool))
    assert figures["roc_auc"] == pytest.approx((2 + 4 * 0.5) / (3 * 2))
    assert figures["average_precision"] == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 5)
    assert figures["best_f1_threshold"] == pytest.approx({"threshold": 0.3, "f1": 0.75, "precision": 0.6,
                                                          "recall": 1.0})


def test_perfect_classifier():
    labels = np.repeat(np.arange(4), 25)
    probs = np.full((100, 4), 0.01)
    probs[np.arange(100), labels] = 0.97
    report = classification_report(probs, labels, list("abcd"))
    assert report["accuracy"] == 1.0 and report["macro"]["f1"] == 1.0
    assert all(row["roc_auc"] == 1.0 and row["average_precision"] == 1.0 for row in report["per_class"])
    assert report["expected_calibration_error"] == pytest.approx(0.03)


def test_calibration_error_by_hand():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 0])
    # bins: 0.9 -> accuracy 0.5 (|0.5-0.9| * 2/4), 0.6 -> accuracy 1.0 (|1-0.6| * 2/4)
    assert classification_report(probs, labels, ["a", "b"])["expected_calibration_error"] == pytest.approx(0.4)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_curves_match_scikit_learn_points():
    probs, labels = random_case(seed=19, decimals=2)
    drawn = curves(probs, labels)
    onehot = np.eye(probs.shape[1])[labels]
    for k, (fpr, tpr) in drawn["roc"].items():
        expected_fpr, expected_tpr, _ = sk.roc_curve(onehot[:, k], probs[:, k], drop_intermediate=False)
        assert fpr == close(expected_fpr) and tpr == close(expected_tpr)
        precision, recall, _ = sk.precision_recall_curve(onehot[:, k], probs[:, k])
        assert drawn["pr"][k][0] == close(recall[::-1]) and drawn["pr"][k][1] == close(precision[::-1])
    expected_fpr, expected_tpr, _ = sk.roc_curve(onehot.ravel(), probs.ravel(), drop_intermediate=False)
    assert drawn["roc_micro"][0] == close(expected_fpr) and drawn["roc_micro"][1] == close(expected_tpr)
