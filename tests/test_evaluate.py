"""Evaluation of a run's checkpoint: cached predictions, invalidated when the checkpoint changes."""
import json

import numpy as np
import pytest

from conftest import tiny_digits
from core.analysis.evaluate import evaluate_run
from core.data.folders import proposed_config
from core.runs.derived import evaluation_files


def test_evaluation_is_cached_and_matches_the_arrays(store, trained):
    report, arrays = evaluate_run(store, trained, "best", "val")
    folder = evaluation_files(store, trained, "best", "val").path("report").parent
    with np.load(folder / "predictions.npz") as saved:
        assert saved["probs"].dtype == np.float32 and saved["labels"].dtype == np.int64
        assert saved["probs"].shape == (report["samples"], 10)
        assert np.array_equal(saved["index"], np.arange(report["samples"]))
    assert report["accuracy"] == pytest.approx((arrays["probs"].argmax(1) == arrays["labels"]).mean())
    assert report["accuracy"] > 0.5
    stamp = (folder / "report.json").stat().st_mtime_ns
    again, _ = evaluate_run(store, trained, "best", "val")
    assert again == report and (folder / "report.json").stat().st_mtime_ns == stamp


def test_a_new_checkpoint_invalidates_the_cache(store, trained, train):
    first, _ = evaluate_run(store, trained, "latest", "test")
    store.update_status(trained, state="stopped")
    config = store.read_config(trained)
    config.epochs = 4
    (store.run_dir(trained) / "config.json").write_text(config.to_json())
    assert train(store, trained) == "completed"   # rewrites latest.pt
    second, _ = evaluate_run(store, trained, "latest", "test")
    assert second["checkpoint"] != first["checkpoint"] and second["epoch"] == 4


def test_bad_requests(store, trained):
    with pytest.raises(ValueError, match="split must be one of val, test"):
        evaluate_run(store, trained, "best", "train")
    fresh = store.create_run(tiny_digits())
    with pytest.raises(FileNotFoundError, match="has no best.pt yet"):
        evaluate_run(store, fresh, "best", "val")


def test_a_run_whose_data_is_gone_says_so_and_what_still_works(image_folder, store, cli, train):
    import shutil
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, model="mlp",
                                   epochs=1, batch_size=8)
    run_id = store.create_run(config)
    assert train(store, run_id) == "completed"
    shutil.rmtree(image_folder)
    with pytest.raises(ValueError) as error:
        evaluate_run(store, run_id, "best", "val")
    assert str(error.value) == (f"the val split is read from the data run {run_id} trained on, and that cannot be "
                                f"loaded now: Folder {image_folder} does not exist. Put the data back where it "
                                "was; the Predict page needs only the checkpoint")
    result = cli("eval", run_id, runs=store.root)
    assert result.returncode == 2 and "Put the data back" in result.stderr and "Traceback" not in result.stderr


def test_cli_eval(store, trained, cli):
    result = cli("eval", trained, "--split", "test", runs=store.root)
    assert result.returncode == 0, result.stderr
    report_path = evaluation_files(store, trained, "best", "test").path("report")
    report = json.loads(report_path.read_text())
    assert f"accuracy {report['accuracy']:.4f}" in result.stdout and f"report: {report_path}" in result.stdout
    bad = cli("eval", "../x", runs=store.root)
    assert bad.returncode == 2 and bad.stderr.startswith("error: invalid run id")


def test_predictions_on_a_streamed_folder_keep_to_their_files(image_folder, store, monkeypatch, train):
    """Unreadable files left out while streaming do not shift the rest: each prediction's index is
    its own sample's position, so tiles show and name the right image."""
    import core.data.datasets
    from core.data.datasets import load_dataset
    from test_data import _add_odd_files
    refused = _add_odd_files(image_folder)
    monkeypatch.setattr(core.data.datasets, "IN_MEMORY_LIMIT_BYTES", 10)
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, model="mlp",
                                   epochs=1, batch_size=8, num_workers=0, val_fraction=0.3, test_fraction=0.3)
    run_id = store.create_run(config)
    assert train(store, run_id) == "completed", store.read_status(run_id).get("error")
    split = load_dataset(config).splits["val"]
    assert split.__class__.__name__ == "StreamingSplit"
    assert any(path in refused for path in split.files)       # the case where numbering went wrong
    _, arrays = evaluate_run(store, run_id, "best", "val")
    index = arrays["index"]
    assert len(index) == len(split) - sum(path in refused for path in split.files)
    assert not any(split.files[i] in refused for i in index)
    assert np.array_equal(arrays["labels"], split.labels[index].numpy())
