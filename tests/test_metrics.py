"""Every figure of core.metrics against scikit-learn on the same arrays."""
import numpy as np
import pytest
from sklearn import metrics as sk

from core.metrics import classification_report


def random_case(n=2000, c=5, seed=0, absent=None, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    if absent is not None:
        labels[labels == absent] = (absent + 1) % c
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[labels]
    if ties:
        logits = np.round(logits, 1)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return probs, labels


@pytest.mark.parametrize("case", [dict(), dict(seed=3, ties=True), dict(absent=2), dict(c=2, seed=5)])
def test_report_agrees_with_scikit_learn(case):
    probs, labels = random_case(**case)
    c = probs.shape[1]
    report = classification_report(probs, labels, [f"c{k}" for k in range(c)])
    predicted = probs.argmax(1)
    everything = list(range(c))
    assert report["accuracy"] == pytest.approx(sk.accuracy_score(labels, predicted))
    assert report["loss"] == pytest.approx(sk.log_loss(labels, probs, labels=everything))
    assert report["confusion_matrix"] == sk.confusion_matrix(labels, predicted, labels=everything).tolist()
    p, r, f, s = sk.precision_recall_fscore_support(labels, predicted, labels=everything, zero_division=0)
    assert [row["precision"] for row in report["per_class"]] == pytest.approx(p)
    assert [row["recall"] for row in report["per_class"]] == pytest.approx(r)
    assert [row["f1"] for row in report["per_class"]] == pytest.approx(f)
    assert [row["support"] for row in report["per_class"]] == s.tolist()
    for average in ("macro", "weighted"):
        p, r, f, _ = sk.precision_recall_fscore_support(labels, predicted, labels=everything, average=average,
                                                        zero_division=0)
        assert (report[average]["precision"], report[average]["recall"], report[average]["f1"]) == pytest.approx((p, r, f))
    onehot = np.eye(c)[labels]
    present = [k for k in everything if onehot[:, k].any()]
    for k in everything:
        row = report["per_class"][k]
        if k in present:
            assert row["roc_auc"] == pytest.approx(sk.roc_auc_score(onehot[:, k], probs[:, k]))
            assert row["average_precision"] == pytest.approx(sk.average_precision_score(onehot[:, k], probs[:, k]))
            precision, recall, thresholds = sk.precision_recall_curve(onehot[:, k], probs[:, k])
            f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                           where=precision + recall > 0)
            assert row["best_f1_threshold"]["f1"] == pytest.approx(f1[:-1].max())
        else:
            assert row["roc_auc"] is None and row["average_precision"] is None
    assert report["micro"]["roc_auc"] == pytest.approx(sk.roc_auc_score(onehot, probs, average="micro"))
    assert report["micro"]["average_precision"] == pytest.approx(
        sk.average_precision_score(onehot, probs, average="micro"))
    assert report["macro"]["roc_auc"] == pytest.approx(
        np.mean([sk.roc_auc_score(onehot[:, k], probs[:, k]) for k in present]))
    assert report["macro"]["average_precision"] == pytest.approx(
        np.mean([sk.average_precision_score(onehot[:, k], probs[:, k]) for k in present]))


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
