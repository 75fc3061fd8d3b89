"""Settings files: `train --config FILE` (YAML or JSON, a run's own config.json), the flags and --set
over it, `show RUN_ID --config [--yaml]` back out, and every bad file refused naming the file and the
setting, with nothing written."""
import json

import pytest
import yaml

from conftest import tiny_digits
from core.config import ConfigError
from core.settings_file import config_from_settings, parse_settings


def runs_made(store) -> list[str]:
    return store.run_ids() if store.root.exists() else []


def test_a_yaml_file_with_a_few_settings_starts_from_its_datasets_defaults(tmp_path, cli, store):
    settings = tmp_path / "fast.yaml"
    settings.write_text("# what I train digits with\nepochs: 1\nimage_size: 8\nlr: 0.01\noptimizer: sgd\n")
    result = cli("train", "--config", settings, runs=store.root)
    assert result.returncode == 0, result.stderr
    [run_id] = store.run_ids()
    config = store.read_config(run_id)
    assert (config.dataset, config.epochs, config.image_size, config.lr, config.optimizer) == \
        ("digits", 1, 8, 0.01, "sgd")
    assert config.batch_size == 64           # digits' own default, which the file leaves out


def test_the_flags_and_set_override_the_file(tmp_path, cli, store):
    settings = tmp_path / "base.json"
    settings.write_text(json.dumps({"dataset": "digits", "epochs": 3, "image_size": 8, "lr": 0.01, "name": "base"}))
    result = cli("train", "--config", settings, "--epochs", "1", "--set", "lr=0.002", "--name", "mine",
                 runs=store.root)
    assert result.returncode == 0, result.stderr
    config = store.read_config(store.run_ids()[0])
    assert (config.epochs, config.lr, config.name, config.image_size) == (1, 0.002, "mine", 8)


def test_a_runs_own_config_json_and_show_config_rerun_the_same_settings(tmp_path, cli, store, trained):
    original = store.read_config(trained).to_dict()
    again = cli("train", "--config", store.run_dir(trained) / "config.json", "--epochs", "1", runs=store.root)
    assert again.returncode == 0, again.stderr
    rerun = next(r for r in store.run_ids() if r != trained)
    assert store.read_config(rerun).to_dict() == {**original, "epochs": 1}
    shown = cli("show", trained, "--config", runs=store.root)
    assert shown.returncode == 0 and json.loads(shown.stdout) == {"schema_version": 2, **original}
    as_yaml = cli("show", trained, "--config", "--yaml", runs=store.root)
    assert yaml.safe_load(as_yaml.stdout) == {"schema_version": 2, **original}
    kept = tmp_path / "kept.yaml"
    kept.write_text(as_yaml.stdout)
    assert config_from_settings(parse_settings(kept.read_text(), str(kept)), str(kept)).to_dict() == original
    alone = cli("show", trained, "--yaml", runs=store.root)
    assert alone.returncode == 2 and "--yaml goes with --config" in alone.stderr


@pytest.mark.parametrize("text, says", [
    ("epochs: [1, 2\n", "is not YAML or JSON (line 2, column 1)"),
    ("{\"epochs\": 3\n", "is not YAML or JSON"),
    ("- epochs: 3\n- lr: 0.1\n", "must hold a mapping of settings (key: value), got a list"),
    ("just some words\n", "must hold a mapping of settings (key: value), got a text"),
    ("", "holds no settings (it is empty)"),
    ("epochs: 3\nlearning_rate: 0.1\n", "unknown setting 'learning_rate'"),
    ("epochs: ten\n", "epochs must be"),
    ("lr: {value: 0.1}\n", "lr must be a number"),
    ("dataset: imagenet\n", "dataset must be one of"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_setting_and_writes_nothing(tmp_path, cli, store, text, says):
    settings = tmp_path / "bad.yaml"
    settings.write_text(text)
    result = cli("train", "--config", settings, runs=store.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {settings}" in result.stderr and says in result.stderr, result.stderr
    assert runs_made(store) == []


def test_every_problem_is_said_at_once(tmp_path, cli, store):
    settings = tmp_path / "bad.yaml"
    settings.write_text("epochs: 0\nlr: -1\nbatch_size: huge\n")
    result = cli("train", "--config", settings, runs=store.root)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith(f"error: {settings}: ") for line in lines)
    assert [line.removeprefix(f"error: {settings}: ").split()[0] for line in lines] == ["epochs", "batch_size", "lr"]
    fixed = cli("train", "--config", settings, "--epochs", "1", "--lr", "0.01", "--batch-size", "32",
                "--set", "image_size=8", runs=store.root)
    assert fixed.returncode == 0, fixed.stderr      # the flags override what the file got wrong


def test_a_missing_or_binary_file_is_refused(tmp_path, cli, store):
    missing = cli("train", "--config", tmp_path / "nope.yaml", runs=store.root)
    assert missing.returncode == 2 and f"cannot read {tmp_path / 'nope.yaml'}" in missing.stderr
    binary = tmp_path / "model.pt"
    binary.write_bytes(bytes(range(256)) * 8)
    result = cli("train", "--config", binary, runs=store.root)
    assert result.returncode == 2 and "is not a text file" in result.stderr
    assert runs_made(store) == []


def test_older_values_read_as_this_versions():
    config = config_from_settings({**tiny_digits().to_dict(), "mixed_precision": False}, "old.json")
    assert config.mixed_precision == "off"
    with pytest.raises(ConfigError, match="old.json: unknown setting 'schema'"):
        config_from_settings({"schema": 1}, "old.json")
