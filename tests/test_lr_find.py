"""The learning-rate range test: its suggestion, its CLI, and that the suggestion trains well."""
import json

import pytest

from core.config import RunConfig
from core.training.lr_find import lr_at, suggest
from pages.common.site import page_path


def test_the_suggestion_is_a_tenth_of_the_lr_at_the_lowest_smoothed_loss():
    lrs = [lr_at(step, 50, 1e-6, 1.0) for step in range(50)]
    losses = [2.3 - 0.04 * step if step < 30 else 1.1 + 0.3 * (step - 30) for step in range(50)]
    assert suggest(lrs, losses) == lrs[30] / 10
    assert lrs[0] == 1e-6 and abs(lrs[-1] - 1.0) < 1e-12


def test_lr_find_suggests_an_lr_that_trains_digits_well(cli, store, train):
    result = cli("lr-find", "--dataset", "digits", "--model", "simple-cnn", runs=store.root)
    assert result.returncode == 0 and not store.root.exists()          # no run folder: nothing written
    report = json.loads(result.stdout)
    curve = report["curve"]
    assert len(curve) == report["steps"] > 20 and all(a["lr"] < b["lr"] for a, b in zip(curve, curve[1:]))
    lowest = min(curve, key=lambda point: point["loss"])
    assert report["min_loss_lr"] == lowest["lr"] and report["suggested_lr"] == lowest["lr"] / 10
    run_id = store.create_run(RunConfig.for_dataset("digits", model="simple-cnn", lr=report["suggested_lr"]))
    assert train(store, run_id) == "completed"
    assert store.read_status(run_id)["best"]["value"] >= 0.95


def test_lr_find_rejects_a_bad_config_with_every_reason(cli, store):
    result = cli("lr-find", "--set", "lr=-1", "--set", "batch_size=0", "--steps", "1", runs=store.root)
    assert result.returncode == 2
    assert "lr must be > 0" in result.stderr and "batch_size" in result.stderr and "--steps" in result.stderr


@pytest.mark.trains     # in the page's LR finder child, not through a training fixture
def test_the_train_form_finds_a_learning_rate_and_fills_it_in(app):
    import time

    from conftest import no_errors
    app.run().switch_page(page_path("train")).run()
    [find] = [button for button in app.button if button.label == "Find a learning rate"]
    find.click().run()
    deadline = time.time() + 240
    while "lr_find_job" in app.session_state and time.time() < deadline:
        time.sleep(1)
        app.run()
    no_errors(app)
    [message] = [s.value for s in app.success if "Suggested learning rate" in s.value]
    suggested = float(message.split("**")[1])
    [lr] = [n for n in app.number_input if n.label == "Learning rate"]
    assert lr.value == suggested and 1e-5 < suggested < 1
    assert any(chart.proto.spec and "Learning-rate range test" in chart.proto.spec for chart in app.get("plotly_chart"))
