"""`python -m core tensorboard`: event files that TensorBoard's own reader reads back equal to the run's
metrics.jsonl, with the probes' histograms and the settings as hparams."""
import pytest
from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, SCALARS, TENSORS, EventAccumulator
from tensorboard.plugins.hparams import metadata

from conftest import tiny_digits
from core.analysis.insight import read_probes


def read_back(folder):
    accumulator = EventAccumulator(str(folder), size_guidance={SCALARS: 0, HISTOGRAMS: 0, TENSORS: 0})
    accumulator.Reload()
    return accumulator


def expected_scalars(rows):
    expected = {}
    for row in rows:
        for name, value in row.items():
            if name not in ("step", "epoch", "time", "split", "kind") and value is not None:
                expected.setdefault(f"{row['split']}_{row['kind']}/{name}", []).append((row["step"], value))
    return expected


def test_scalars_histograms_and_hparams_read_back_equal_to_the_run(store, trained, cli):
    result = cli("tensorboard", trained, runs=store.root)
    assert result.returncode == 0, result.stderr
    folder = store.tensorboard_dir(trained)
    assert f"to {folder}" in result.stdout and "missing" not in result.stdout
    events = read_back(folder)

    expected = expected_scalars(store.read_metrics(trained))
    assert {"train_step/loss", "train_epoch/acc", "val_epoch/loss", "val_epoch/acc"} <= set(expected)
    for tag, points in expected.items():
        written = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in written] == [step for step, _ in points], tag
        assert [value for _, value in written] == pytest.approx([value for _, value in points], rel=1e-6), tag

    records, _ = read_probes(store, trained)
    layers = ["features.0", "features.3", "features.6", "classifier.1", "classifier.4"]
    assert list(records[-1]["layers"]) == layers
    for layer in layers:
        for prefix, part in (("weights", "weight"), ("grads", "grad")):
            histograms = events.Histograms(f"{prefix}/{layer}")
            assert [h.step for h in histograms] == [r["step"] for r in records]
            last, probe = histograms[-1].histogram_value, records[-1]["layers"][layer][part]
            assert list(last.bucket) == probe["hist"] and last.num == records[-1]["layers"][layer]["params"]
            assert (last.min, last.max) == (pytest.approx(probe["min"]), pytest.approx(probe["max"]))
            assert last.bucket_limit[-1] == pytest.approx(probe["max"])

    plugin = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(plugin[metadata.SESSION_START_INFO_TAG])
    config = store.read_config(trained).to_dict()
    assert set(start.hparams) == set(config)
    assert start.hparams["lr"].number_value == config["lr"]
    assert start.hparams["model"].string_value == config["model"]
    assert start.hparams["aug_flip"].bool_value is config["aug_flip"] is False
    experiment = metadata.parse_experiment_plugin_data(plugin[metadata.EXPERIMENT_TAG])
    optimizer = next(info for info in experiment.hparam_infos if info.name == "optimizer")
    assert [value.string_value for value in optimizer.domain_discrete.values] == ["adam", "adamw", "sgd"]
    lr = next(info for info in experiment.hparam_infos if info.name == "lr")
    assert (lr.domain_interval.min_value, lr.domain_interval.max_value) == (0, 10)
    assert [m.name.tag for m in experiment.metric_infos] == ["val_epoch/acc", "val_epoch/loss"]


def test_a_second_export_replaces_the_first(store, trained, cli):
    folder = store.tensorboard_dir(trained)
    assert cli("tensorboard", trained, runs=store.root).returncode == 0
    first = sorted(folder.iterdir())
    assert cli("tensorboard", trained, runs=store.root).returncode == 0
    second = sorted(folder.iterdir())
    assert len(second) == 1 and second != first          # one event file: nothing counted twice
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".tensorboard")] == []


def test_out_elsewhere_and_a_folder_of_other_files_is_never_replaced(store, trained, cli, tmp_path):
    out = tmp_path / "tb"
    assert cli("tensorboard", trained, "--out", out, runs=store.root).returncode == 0
    assert read_back(out).Tags()["scalars"]
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    result = cli("tensorboard", trained, "--out", mine, runs=store.root)
    assert result.returncode == 2 and "holds files other than TensorBoard event files" in result.stderr
    assert [p.name for p in mine.iterdir()] == ["todo.txt"]


def test_a_run_without_probes_exports_its_scalars_and_says_what_is_missing(store, trained, cli):
    store.probes_path(trained).unlink()          # as a run from before probes
    result = cli("tensorboard", trained, runs=store.root)
    assert result.returncode == 0
    assert (f"weight and gradient histograms are missing: run {trained} has no probes (probes.jsonl is "
            "missing)") in result.stdout
    events = read_back(store.tensorboard_dir(trained))
    assert set(expected_scalars(store.read_metrics(trained))) <= set(events.Tags()["scalars"])
    assert events.Tags()["histograms"] == []


def test_a_one_epoch_run_has_one_histogram_per_layer(store, cli, train):
    run_id = store.create_run(tiny_digits(epochs=1, probe_interval=0))
    assert train(store, run_id) == "completed"
    assert cli("tensorboard", run_id, runs=store.root).returncode == 0
    events = read_back(store.tensorboard_dir(run_id))
    steps = store.read_status(run_id)["step"]
    assert [h.step for h in events.Histograms("grads/classifier.4")] == [steps]


def test_an_unknown_run_exits_2(store, cli):
    result = cli("tensorboard", "no-such-run", runs=store.root)
    assert result.returncode == 2 and "no run 'no-such-run'" in result.stderr
