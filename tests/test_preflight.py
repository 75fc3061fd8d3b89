"""The pre-flight check: one batch through the model before the run, its figures in plain words and
its problems as the diagnosis's findings; `core check` and the Train form's Check button."""
import json
import math
import time

import pytest

from conftest import no_errors, tiny_digits, write_png
from core.analysis.diagnosis import ADVICE, class_imbalance
from core.data.datasets import load_dataset
from core.data.folders import proposed_config
from core.training.preflight import check_config, findings
from pages.common.site import page_path


def test_a_healthy_run_passes_with_its_figures(cli, store):
    config = tiny_digits(epochs=3)
    report = check_config(config)
    assert report["findings"] == []
    assert report["batch"] == 64 and report["classes"] == 10 and report["device"] == "cpu"
    assert len(report["inputs"]["mean"]) == len(report["inputs"]["std"]) == 1      # digits: one channel
    assert abs(report["inputs"]["mean"][0]) < 0.5 and 0.5 < report["inputs"]["std"][0] < 1.5   # normalised
    assert report["loss"]["chance"] == pytest.approx(math.log(10))
    assert abs(report["loss"]["first"] - report["loss"]["chance"]) < 0.15 * report["loss"]["chance"]
    assert report["gradients"]["total_norm"] > 0 and report["gradients"]["zero"] == []
    assert report["update"]["changed"] == report["update"]["parameters"] > 0
    assert report["estimate"]["steps"] == 3 * math.ceil(len(load_dataset(config).splits["train"]) / 64)
    assert report["estimate"]["seconds"] > 0 and report["step"]["peak_process_mb"] > 0
    result = cli("check", "--set", "image_size=8", "--epochs", "3", runs=store.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no problem found"
    assert "first loss: " in result.stdout and "the run: " in result.stdout
    as_json = cli("check", "--set", "image_size=8", "--json", runs=store.root)
    assert json.loads(as_json.stdout)["loss"]["chance"] == pytest.approx(math.log(10))
    assert not store.root.exists() or store.run_ids() == []         # nothing written


def test_inputs_a_hundred_times_too_large_are_said_before_the_run(monkeypatch):
    """The reference document's sign of broken preprocessing: a first loss far above chance."""
    from core.data.augment import BatchPreprocessor
    original = BatchPreprocessor.__call__
    monkeypatch.setattr(BatchPreprocessor, "__call__",
                        lambda self, images, train=True: 100 * original(self, images, train))
    report = check_config(tiny_digits())
    [finding] = [f for f in report["findings"] if f["code"] == "initial_loss"]
    assert finding["severity"] == "warning" and finding["advice"] == ADVICE["initial_loss"]
    assert f"{report['loss']['first']:.3g}" in finding["message"] and "ln 10" in finding["message"]


def test_gradients_and_an_update_that_cannot_train_are_errors():
    dataset = load_dataset(tiny_digits())
    report = {"loss": {"first": 2.3, "chance": math.log(10), "random_outputs": 2.8}, "classes": 10,
              "outputs": {"min": -1, "max": 1},
              "gradients": {"total_norm": float("nan"), "parameters": 4, "zero": ["features.0.weight"],
                            "non_finite": ["classifier.4.weight"]},
              "update": {"changed": 0, "parameters": 4}}
    found = {f.code: f for f in findings(report, dataset, tiny_digits())}
    assert set(found) == {"exploding_gradients", "vanishing_gradients", "not_learning"}
    assert found["exploding_gradients"].severity == found["not_learning"].severity == "error"
    assert "classifier.4.weight" in found["exploding_gradients"].message
    assert "1 of 4 trained parameter(s) got no gradient at all: features.0.weight" in \
        found["vanishing_gradients"].message
    assert found["not_learning"].advice == ADVICE["not_learning"].format(lr=tiny_digits().lr)


def test_an_imbalanced_folder_is_said_as_the_diagnosis_says_it(tmp_path, cli, store):
    root = tmp_path / "pets"
    for label, count in (("cat", 30), ("dog", 4)):
        (root / label).mkdir(parents=True)
        for i in range(count):
            write_png(root / label / f"{i}.png", 30 if label == "cat" else 200)
    config = proposed_config("image-folder", data_path=str(root), image_size=12, batch_size=8)
    report = check_config(config)
    [finding] = [f for f in report["findings"] if f["code"] == "class_imbalance"]
    dataset = load_dataset(config)
    same = class_imbalance([], {"classes": dataset.classes, "class_counts": dataset.counts()["train"]},
                           config.to_dict())
    assert finding == same.to_dict()
    result = cli("check", "--dataset", "image-folder", "--data", root, "--set", "image_size=12", "--batch-size", "8",
                 runs=store.root)
    assert result.returncode == 0 and "warning: class_imbalance: The training split is imbalanced" in result.stdout


@pytest.mark.trains     # in the page's check child, not through a training fixture
def test_the_train_forms_check_button_reports_before_anything_is_launched(app):
    app.run().switch_page(page_path("train")).run()
    [check] = [button for button in app.button if button.label == "Check"]
    check.click().run()
    deadline = time.time() + 240
    while "check_job" in app.session_state and time.time() < deadline:
        time.sleep(1)
        app.run()
    no_errors(app)
    assert "check_job_result" in app.session_state and "error" not in app.session_state["check_job_result"]
    shown = [m.value for m in app.markdown]
    assert "**Check: no problem found**" in shown
    assert any(text.startswith("- data: a batch of") and "- first loss: " in text for text in shown)
    assert app.session_state["check_job_result"]["loss"]["chance"] == pytest.approx(math.log(10))
