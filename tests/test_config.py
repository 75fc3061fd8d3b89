import pytest

from core.config import ConfigError, RunConfig


def test_defaults_are_valid_for_every_builtin_dataset():
    for dataset in ("digits", "mnist", "fashion-mnist", "cifar10"):
        assert RunConfig.for_dataset(dataset).validate() == []


def test_every_problem_is_reported_at_once_in_plain_words():
    config = RunConfig(lr=-1, epochs=0, batch_size=0, optimizer="rmsprop", scheduler="linear",
                       dataset="nope", model="vgg", channels=2, val_fraction=0.6, test_fraction=0.5)
    problems = config.validate()
    assert "lr must be > 0, got -1" in problems
    assert "epochs must be >= 1, got 0" in problems
    assert "batch_size must be >= 1, got 0" in problems
    assert any(p.startswith("optimizer must be one of sgd, adam, adamw") for p in problems)
    assert any(p.startswith("scheduler must be one of") for p in problems)
    assert any(p.startswith("dataset must be one of") for p in problems)
    assert any(p.startswith("model must be one of") for p in problems)
    assert any("channels must be 1" in p for p in problems)
    assert any("val_fraction + test_fraction" in p for p in problems)


def test_wrong_types_are_problems_not_crashes():
    problems = RunConfig(epochs="ten", lr="fast", aug_flip="yes").validate()
    assert "epochs must be an integer, got 'ten'" in problems
    assert "lr must be a number, got 'fast'" in problems
    assert "aug_flip must be true or false, got 'yes'" in problems


def test_folder_datasets_need_a_path():
    assert any("data_path is required" in p for p in RunConfig(dataset="image-folder").validate())


def test_json_round_trip():
    config = RunConfig.for_dataset("cifar10", lr=0.05, name="round trip", aug_rotation=10.0)
    again = RunConfig.from_json(config.to_json())
    assert again == config


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown setting 'lrate'"):
        RunConfig.from_dict({"lrate": 1})


def test_key_value_updates_parse_types():
    config = RunConfig().with_updates(["epochs=3", "lr=1e-2", "aug_flip=true", "optimizer=sgd", "name=a=b"])
    assert (config.epochs, config.lr, config.aug_flip, config.optimizer, config.name) == (3, 0.01, True, "sgd", "a=b")
    with pytest.raises(ConfigError) as error:
        RunConfig().with_updates(["nonsense", "colour=red"])
    assert error.value.problems == ["expected key=value, got 'nonsense'", "unknown setting 'colour'"]


def test_every_field_is_described_once():
    import dataclasses

    from core.config import GROUPS, SETTINGS
    assert list(SETTINGS) == [f.name for f in dataclasses.fields(RunConfig)]
    for name, setting in SETTINGS.items():
        assert setting.label and setting.group in GROUPS, name
        assert setting.problem(setting.default) is None, name       # every default is allowed
        assert setting.kind in (int, float, bool, str), name


def test_model_minimum_size_comes_from_the_registry():
    from core.models.registry import MODEL_SPECS
    smallest = MODEL_SPECS["simple-cnn"].min_input_size
    assert f"image_size must be >= {smallest} for simple-cnn, got 4" in RunConfig(image_size=4).validate()
    assert RunConfig(image_size=4, model="mlp").validate() == []


def test_older_and_newer_config_files_are_read_tolerantly():
    import json

    from core.config import read_config_values
    written = json.loads(RunConfig(epochs=3).to_json())
    assert written["schema_version"] == 2
    older = {k: v for k, v in written.items() if k not in ("schema_version", "label_smoothing")}
    config, unknown = read_config_values(older)
    assert (config.epochs, config.label_smoothing, unknown) == (3, 0.0, {})      # missing key: default
    config, unknown = read_config_values({**written, "schema_version": 9, "warmup_epochs": 2})
    assert config.epochs == 3 and unknown == {"warmup_epochs": 2}               # unknown key: kept aside
    with pytest.raises(ConfigError, match="must be a JSON object"):
        read_config_values([1, 2])


def test_a_model_set_on_the_command_line_brings_its_natural_size():
    config = RunConfig.for_dataset("digits").with_updates(["model=imagenet-resnet18"])
    assert config.image_size == 224
    assert RunConfig.for_dataset("digits").with_updates(["model=imagenet-resnet18", "image_size=64"]).image_size == 64
    assert RunConfig.for_dataset("digits").with_updates(["model=resnet18"]).image_size == 16    # no natural size


def test_batch_size_is_a_number_or_auto():
    from core.config import SETTINGS
    assert RunConfig().with_updates(["batch_size=auto"]).batch_size == "auto"
    assert RunConfig(batch_size="auto").validate() == []          # device auto: the launch check decides
    assert SETTINGS["batch_size"].rule() == "an integer >= 1 and <= 65536 or auto"
