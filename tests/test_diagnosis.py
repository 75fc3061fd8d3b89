"""The diagnosis: each rule on metrics shaped like the condition it names, a healthy run with no
warning, and real runs made to show a condition."""
import json
import math

import pytest

from conftest import tiny_digits
from core.analysis.diagnosis import ERROR, WARNING, diagnose
from pages.common.site import page_path

CONFIG = {"lr": 1e-3, "class_weighted_loss": False}
STATUS = {"classes": [str(i) for i in range(10)]}


def run_rows(train_losses, val_losses, train_accs=None, val_accs=None, steps_per_epoch=4, step_losses=None,
             grad_norms=None):
    """Metrics rows for a run with these per-epoch losses; step rows interpolate the epoch losses
    unless given."""
    epochs = len(train_losses)
    train_accs = train_accs or [0.99] * epochs
    val_accs = val_accs or [0.97] * epochs
    if step_losses is None:
        step_losses = [loss for loss in train_losses for _ in range(steps_per_epoch)]
    grad_norms = grad_norms or [1.0] * len(step_losses)
    rows = []
    for i, (loss, norm) in enumerate(zip(step_losses, grad_norms), 1):
        rows.append({"step": i, "epoch": (i - 1) // steps_per_epoch + 1, "split": "train", "kind": "step",
                     "loss": loss, "acc": 0.5, "grad_norm": norm})
    for epoch in range(1, epochs + 1):
        step = epoch * steps_per_epoch
        rows.append({"step": step, "epoch": epoch, "split": "train", "kind": "epoch",
                     "loss": train_losses[epoch - 1], "acc": train_accs[epoch - 1]})
        rows.append({"step": step, "epoch": epoch, "split": "val", "kind": "epoch",
                     "loss": val_losses[epoch - 1], "acc": val_accs[epoch - 1]})
    return rows


def codes(rows, status=STATUS, config=CONFIG):
    return [finding.code for finding in diagnose(rows, status, config)]


HEALTHY = run_rows([1.2, 0.5, 0.3, 0.2, 0.15, 0.12], [0.9, 0.45, 0.3, 0.25, 0.22, 0.21],
                   step_losses=[2.3, 2.0, 1.6, 1.2, 0.9, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.28, 0.26, 0.24, 0.2,
                                0.19, 0.18, 0.17, 0.15, 0.14, 0.13, 0.13, 0.12])


def test_a_healthy_run_has_no_finding():
    assert codes(HEALTHY) == []


def test_a_first_loss_far_above_chance_is_initial_loss_as_the_preflight_says():
    from core.analysis.diagnosis import ADVICE
    rows = run_rows([1.2, 0.5, 0.3], [0.9, 0.45, 0.3], step_losses=[7.1, 2.0, 1.2, 0.9] * 3)
    [finding] = diagnose(rows, STATUS, CONFIG)
    assert finding.code == "initial_loss" and finding.advice == ADVICE["initial_loss"]
    assert "7.1 at step 1, is 3.1x the 2.3" in finding.message
    assert codes(rows, status={}) == []            # the classes unknown: chance is unknown too


def test_a_nan_loss_is_diverged_and_masks_what_only_repeats_it():
    rows = run_rows([2.3, 2.0], [2.2, 2.1], train_accs=[0.1, 0.1], step_losses=[2.3, 5.0, 40.0, math.nan] * 2)
    [finding] = diagnose(rows, STATUS, CONFIG)
    assert finding.code == "diverged" and finding.severity == ERROR and finding.evidence["step"] == 4


def test_a_diverged_run_is_not_called_overfitting():
    # The val loss rose from its best while the train loss, astronomically high at first, fell back.
    rows = run_rows([2.5e5, 3.0, 2.4, 2.3], [2.2, 2.6, 2.9, 3.1], train_accs=[0.1] * 4,
                    step_losses=[2.3, 5.0, 9e5, 2.5] * 4)
    status = {**STATUS, "diverged_at_step": 3}
    assert [f.code for f in diagnose(rows, status, CONFIG)] == ["diverged"]


def test_the_step_a_diverged_run_stopped_at_is_named():
    finding = diagnose(run_rows([2.3], [2.2], train_accs=[0.1]), {**STATUS, "diverged_at_step": 17}, CONFIG)[0]
    assert finding.code == "diverged" and "step 17" in finding.message


def test_exploding_gradients():
    norms = [1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 300.0, 2.0]
    [finding] = diagnose(run_rows([1.0, 0.5], [0.9, 0.5], grad_norms=norms), STATUS, CONFIG)
    assert finding.code == "exploding_gradients" and finding.evidence["step"] == 7
    # A poor fit beside them is their doing: "raise the learning rate" (underfitting's advice) would be wrong.
    poor = run_rows([6.0, 3.0, 2.3], [3.0, 2.4, 2.3], train_accs=[0.1] * 3, val_accs=[0.1] * 3,
                    steps_per_epoch=4, grad_norms=norms + [1.0] * 4)
    assert "exploding_gradients" in codes(poor) and "underfitting" not in codes(poor)


def test_vanishing_gradients():
    rows = run_rows([1.0, 0.5], [0.9, 0.5], grad_norms=[1e-9] * 8)
    assert "vanishing_gradients" in codes(rows)


def test_not_learning_masks_the_slow_and_flat_findings():
    rows = run_rows([2.30, 2.29, 2.29, 2.28, 2.28, 2.28], [2.30] * 6, train_accs=[0.1] * 6, val_accs=[0.1] * 6,
                    step_losses=[2.30] * 24)
    assert codes(rows) == ["not_learning"]


def test_lr_too_high_when_the_loss_rises_or_swings_early():
    rising = run_rows([2.0, 1.0, 0.5, 0.3], [1.0, 0.8, 0.5, 0.4],
                      step_losses=[2.0, 2.2, 2.5, 2.8, 2.4, 1.9, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3])
    assert "lr_too_high" in codes(rising)
    swinging = run_rows([2.0, 1.0, 0.5, 0.3], [1.0, 0.8, 0.5, 0.4],
                        step_losses=[2.0, 1.3, 2.1, 1.2, 2.0, 1.3, 1.2, 1.0, 0.9, 0.8, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3])
    assert "lr_too_high" in codes(swinging)


def test_small_batch_noise_after_a_fast_drop_is_not_lr_too_high():
    noisy = run_rows([2.0, 0.2, 0.1, 0.08], [1.0, 0.3, 0.25, 0.24],
                     step_losses=[3.0, 0.5, 0.2, 0.05, 0.3, 0.04, 0.25, 0.03, 0.2, 0.05, 0.15, 0.04, 0.1, 0.05,
                                  0.08, 0.04])
    assert "lr_too_high" not in codes(noisy)


def test_lr_too_low_when_the_loss_falls_slowly_but_surely():
    losses = [2.0 * 0.97 ** e for e in range(8)]
    rows = run_rows(losses, [loss + 0.05 for loss in losses], train_accs=[0.4] * 8,
                    step_losses=[loss for loss in losses for _ in range(4)])
    assert "lr_too_low" in codes(rows)


def test_overfitting_names_the_epoch_it_began():
    rows = run_rows([1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03], [0.9, 0.5, 0.4, 0.45, 0.55, 0.7, 0.8])
    [finding] = diagnose(rows, STATUS, CONFIG)
    assert finding.code == "overfitting" and finding.evidence["began_at_epoch"] == 4
    assert finding.evidence["best_val_epoch"] == 3 and "epoch 3" in finding.advice


def test_val_loss_rising_with_the_train_loss_is_not_overfitting():
    rows = run_rows([1.0, 0.5, 0.3, 0.5, 0.8, 1.0], [0.9, 0.5, 0.4, 0.6, 0.8, 1.1], train_accs=[0.96] * 6)
    assert "overfitting" not in codes(rows)


def test_plateau_below_convergence():
    rows = run_rows([1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7], [1.0, 0.8, 0.72, 0.72, 0.725, 0.72, 0.721],
                    train_accs=[0.85] * 7)
    assert codes(rows) == ["plateau"]
    converged = run_rows([1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7], [1.0, 0.8, 0.72, 0.72, 0.725, 0.72, 0.721])
    assert codes(converged) == []


def test_underfitting():
    rows = run_rows([1.5, 1.2, 1.1], [1.5, 1.3, 1.2], train_accs=[0.4, 0.5, 0.55], val_accs=[0.4, 0.5, 0.6])
    assert "underfitting" in codes(rows)


def test_no_underfitting_after_one_epoch_or_when_the_val_accuracy_is_high():
    # Epoch 1's train accuracy averages batches from a model at chance: every short run would warn.
    assert "underfitting" not in codes(run_rows([1.5], [1.0], train_accs=[0.55], val_accs=[0.6]))
    # Augmentation and dropout make training batches harder than the val split: that is not underfitting.
    assert "underfitting" not in codes(run_rows([1.5, 1.2, 1.1], [0.6, 0.5, 0.4], train_accs=[0.5, 0.6, 0.7],
                                                val_accs=[0.8, 0.85, 0.9]))


def test_class_imbalance_unless_the_loss_is_weighted():
    status = {**STATUS, "classes": ["cat", "dog"], "class_counts": [900, 60]}
    # HEALTHY's losses scaled to two classes (a uniform guess's loss is ln 2, not ln 10)
    rows = [{**row, "loss": row["loss"] * math.log(2) / math.log(10)} for row in HEALTHY]
    [finding] = diagnose(rows, status, CONFIG)
    assert finding.code == "class_imbalance" and finding.evidence["counts"] == {"cat": 900, "dog": 60}
    assert diagnose(rows, status, {**CONFIG, "class_weighted_loss": True}) == []


def test_nearly_uniform_images():
    [finding] = diagnose(HEALTHY, {**STATUS, "mean": [0.0], "std": [0.0]}, CONFIG)
    assert finding.code == "data_range" and finding.severity == WARNING


def probe(step, grads, dead=None):
    """A probes.jsonl record (core.training.probes) with these per-layer gradient norms and dead fractions."""
    return {"step": step, "epoch": 1, "layers": {name: {"weight": {"norm": 1.0}, "grad": {"norm": norm}}
                                                 for name, norm in grads.items()},
            "activations": {name: {"zero_frac": share, "dead_frac": share} for name, share in (dead or {}).items()}}


def test_per_layer_gradients_that_fade_towards_the_input_are_vanishing():
    probes = [probe(10, {"conv1": 1e-9, "conv2": 1e-3, "fc": 0.5})]
    [finding] = diagnose(HEALTHY, STATUS, CONFIG, probes)
    assert (finding.code == "vanishing_gradients"
            and [layer["layer"] for layer in finding.evidence["layers"]] == ["conv1"])
    assert diagnose(HEALTHY, STATUS, CONFIG, [probe(10, {"conv1": 0.01, "conv2": 0.1, "fc": 0.5})]) == []


def test_dead_relu_units_are_named_by_layer():
    probes = [probe(10, {"fc": 0.5}, dead={"relu1": 0.1, "relu2": 0.8})]
    [finding] = diagnose(HEALTHY, STATUS, CONFIG, probes)
    assert finding.code == "dead_units" and finding.evidence["dead_fraction"] == {"relu2": 0.8}


def test_empty_and_one_epoch_runs_have_nothing_to_say_yet():
    assert codes([]) == []
    assert codes(run_rows([0.5], [0.4])) == []


# --- real runs made to show a condition ------------------------------------------------------
@pytest.mark.parametrize("settings, expected", [
    (dict(epochs=2, optimizer="sgd", lr=5.0), "diverged"),
    (dict(epochs=3, lr=1e-7), "not_learning"),
])
def test_real_runs_show_their_condition(store, cli, settings, expected, train):
    run_id = store.create_run(tiny_digits(**settings))
    train(store, run_id)
    result = cli("diagnose", run_id, runs=store.root)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["findings"][0]["code"] == expected
    assert set(report["findings"][0]) == {"code", "severity", "message", "advice", "evidence"}


def test_a_healthy_real_run_has_no_warning(store, cli, train):
    run_id = store.create_run(tiny_digits(image_size=16, epochs=6, batch_size=32))
    assert train(store, run_id) == "completed"
    assert json.loads(cli("diagnose", run_id, runs=store.root).stdout)["findings"] == []


def test_memorising_a_tiny_split_is_overfitting(store, cli, train):
    # One batch per epoch: the same numbers on one core as on two. Batches of 16 trained differently on
    # one core (torch's thread count), and the train loss ended too noisy there to call it overfitting.
    run_id = store.create_run(tiny_digits(image_size=16, model="mlp", epochs=80, val_fraction=0.9, lr=0.005,
                                          test_fraction=0.0, batch_size=256, weight_decay=0.0, scheduler="none"))
    assert train(store, run_id) == "completed"
    codes_found = [f["code"] for f in json.loads(cli("diagnose", run_id, runs=store.root).stdout)["findings"]]
    assert "overfitting" in codes_found


def test_the_train_page_shows_the_findings_beside_the_curves(store, app, train):
    from test_pages import no_errors
    run_id = store.create_run(tiny_digits(epochs=3, lr=1e-7))
    train(store, run_id)
    app.run().switch_page(page_path("train")).run()
    no_errors(app)
    [warning] = [w.value for w in app.warning if "not learning" in w.value]
    assert "still near its starting value" in warning and "Raise the learning rate (now 1e-07)" in warning
