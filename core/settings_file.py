"""Settings files: a run's settings as YAML or JSON that live beside the code and in git. `core train
--config FILE` and the Train form's "Load settings" read one (a run's own config.json is one);
`core show RUN_ID --config [--yaml]` and "Download settings" write one.

A file may hold every setting or a few: those missing take the defaults of its dataset (and, for a
folder, the folder's own image size), as the form and the flags do. Whatever is wrong with a file
is said at once, each problem naming the file and the setting, before anything is written.
"""
from __future__ import annotations

from pathlib import Path

from core.config import CONFIG_SCHEMA_VERSION, SETTINGS, ConfigError, RunConfig, read_config_values
from core.data.folders import proposed_config

MAX_SETTINGS_BYTES = 1 << 20     # a settings file is a few kB; a megabyte is certainly something else


def parse_settings(text: str, source: str) -> dict:
    """The settings a file's text holds (JSON, or YAML, of which JSON is a part); ConfigError names
    `source` and what is wrong."""
    import yaml
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        reason = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError([f"{source} is not YAML or JSON{at}: {reason}"]) from None
    if values is None:
        raise ConfigError([f"{source} holds no settings (it is empty)"])
    if not isinstance(values, dict):
        raise ConfigError([f"{source} must hold a mapping of settings (key: value), got a {_kind(values)}"])
    return values


def read_settings_file(path: str | Path) -> dict:
    """parse_settings of a file; ConfigError when it cannot be read."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_SETTINGS_BYTES:
            raise ConfigError([f"{path} is {path.stat().st_size:,} bytes: not a settings file"])
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path} is not a text file (YAML or JSON expected)"]) from None
    except OSError as error:
        raise ConfigError([f"cannot read {path}: {error.strerror or error}"]) from None
    return parse_settings(text, str(path))


def config_from_settings(values: dict, source: str, overrides: dict | None = None, updates=()) -> RunConfig:
    """The RunConfig a settings mapping describes, with `overrides` (the command line's flags) and then
    `updates` (--set KEY=VALUE) on top, and its dataset's defaults for what it leaves out. ConfigError
    lists every problem; one that comes from the file names `source` and the setting."""
    values = {key: value for key, value in values.items() if key != "schema_version"}
    problems = [f"{source}: unknown setting {key!r}" for key in values if key not in SETTINGS]
    if problems:
        raise ConfigError(problems)
    known = read_config_values(values)[0]     # older files' values read as this version's
    given = {**{key: getattr(known, key) for key in values}, **(overrides or {})}
    dataset = given.pop("dataset", SETTINGS["dataset"].default)
    if dataset not in SETTINGS["dataset"].choices:
        where = f"{source}: " if "dataset" not in (overrides or {}) else ""
        raise ConfigError([f"{where}dataset must be one of {', '.join(SETTINGS['dataset'].choices)}; "
                           f"got {dataset!r}"])
    config = proposed_config(dataset, **given).with_updates(list(updates))
    from_file = set(values) - set(overrides or {}) - {u.partition("=")[0].strip() for u in updates}
    problems = [f"{source}: {problem}" if problem.split(" ", 1)[0] in from_file else problem
                for problem in config.validate()]
    if problems:
        raise ConfigError(problems)
    return config


def settings_text(config: RunConfig, as_yaml: bool = False) -> str:
    """A run's settings in the form a settings file takes: config.json's JSON, or YAML."""
    if not as_yaml:
        return config.to_json() + "\n"
    import yaml
    return yaml.safe_dump({"schema_version": CONFIG_SCHEMA_VERSION, **config.to_dict()}, sort_keys=True,
                          allow_unicode=True)


def _kind(value) -> str:
    return {list: "list", str: "text", int: "number", float: "number", bool: "true/false"}.get(type(value),
                                                                                               type(value).__name__)
