"""RunConfig: every knob of a training run, its validation in plain words, and its JSON form."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

DATASETS = ("digits", "image-folder", "csv-folder", "mnist", "fashion-mnist", "cifar10")
MODELS = ("mlp", "simple-cnn", "resnet18", "resnet34")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine", "onecycle", "plateau")
DEVICES = ("auto", "cpu", "cuda")
BEST_METRICS = ("val_acc", "val_loss")
FOLDER_DATASETS = ("image-folder", "csv-folder")

# Per-dataset starting points: what a person would pick first for each.
DATASET_DEFAULTS: dict[str, dict] = {
    "digits": {"image_size": 16, "channels": 1, "epochs": 10, "batch_size": 64, "lr": 2e-3},
    "mnist": {"image_size": 28, "channels": 1, "epochs": 5, "batch_size": 128, "lr": 1e-3},
    "fashion-mnist": {"image_size": 28, "channels": 1, "epochs": 10, "batch_size": 128, "lr": 1e-3},
    "cifar10": {"image_size": 32, "channels": 3, "epochs": 30, "batch_size": 128, "lr": 1e-3,
                "model": "resnet18", "aug_random_crop": True, "aug_flip": True},
    "image-folder": {"image_size": 64, "channels": 3, "epochs": 20, "batch_size": 32, "lr": 1e-3,
                     "aug_random_crop": True, "aug_flip": True},
    "csv-folder": {"image_size": 64, "channels": 3, "epochs": 20, "batch_size": 32, "lr": 1e-3,
                   "aug_random_crop": True, "aug_flip": True},
}


@dataclass
class RunConfig:
    # data
    dataset: str = "digits"
    data_path: str = ""          # folder for image-folder / csv-folder, download root for torchvision sets
    labels_csv: str = ""         # csv-folder: CSV of filename,label (default: <data_path>/labels.csv)
    image_size: int = 16         # square side the images are resized to
    channels: int = 1            # 1 = grayscale, 3 = RGB
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    # model and optimisation
    model: str = "simple-cnn"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9        # sgd only
    weight_decay: float = 1e-4
    scheduler: str = "cosine"
    step_size: int = 5           # step scheduler: epochs between decays
    gamma: float = 0.1           # step / plateau decay factor
    label_smoothing: float = 0.0
    class_weighted_loss: bool = False
    grad_clip: float = 0.0       # max gradient norm; 0 = off
    mixed_precision: bool = False  # CUDA only
    # augmentation, applied to whole batches on the device
    aug_random_crop: bool = False
    aug_flip: bool = False
    aug_rotation: float = 0.0    # max degrees
    aug_color_jitter: float = 0.0  # brightness/contrast strength, 0..1
    # run control
    early_stopping_patience: int = 0  # epochs without improvement; 0 = off
    best_metric: str = "val_acc"
    seed: int = 0
    device: str = "auto"
    log_interval: int = 20       # training steps between metric lines
    num_workers: int = 2         # DataLoader workers for folders streamed from disk
    name: str = ""

    @classmethod
    def for_dataset(cls, dataset: str, **overrides) -> "RunConfig":
        """A config with the sensible defaults of `dataset`, then `overrides` on top."""
        values = dict(DATASET_DEFAULTS.get(dataset, {}))
        values.update(overrides)
        return cls(dataset=dataset, **values)

    # --- validation -------------------------------------------------------------------
    def validate(self) -> list[str]:
        """Every problem with this config at once, in plain words; [] when it is fine."""
        problems: list[str] = []

        def choice(name: str, allowed: tuple) -> None:
            value = getattr(self, name)
            if value not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

        def number(name: str, low: float | None = None, high: float | None = None,
                   low_open: bool = False, integer: bool = False) -> None:
            value = getattr(self, name)
            kind = "an integer" if integer else "a number"
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    (integer and not isinstance(value, int)):
                problems.append(f"{name} must be {kind}, got {value!r}")
                return
            if not math.isfinite(value):
                problems.append(f"{name} must be finite, got {value}")
            elif low is not None and (value <= low if low_open else value < low):
                problems.append(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
            elif high is not None and value > high:
                problems.append(f"{name} must be <= {high:g}, got {value:g}")

        def flag(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")

        choice("dataset", DATASETS)
        choice("model", MODELS)
        choice("optimizer", OPTIMIZERS)
        choice("scheduler", SCHEDULERS)
        choice("device", DEVICES)
        choice("best_metric", BEST_METRICS)
        number("epochs", 1, 100_000, integer=True)
        number("batch_size", 1, 65_536, integer=True)
        number("image_size", 4, 1024, integer=True)
        if isinstance(self.channels, int) and self.channels not in (1, 3):
            problems.append(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        number("channels", integer=True)
        number("lr", 0, 10, low_open=True)
        number("momentum", 0, 1)
        number("weight_decay", 0, 1)
        number("step_size", 1, integer=True)
        number("gamma", 0, 1, low_open=True)
        number("label_smoothing", 0, 0.99)
        number("grad_clip", 0)
        number("aug_rotation", 0, 180)
        number("aug_color_jitter", 0, 1)
        number("early_stopping_patience", 0, integer=True)
        number("seed", 0, 2**31 - 1, integer=True)
        number("log_interval", 1, integer=True)
        number("num_workers", 0, 64, integer=True)
        number("val_fraction", 0, 0.9, low_open=True)
        number("test_fraction", 0, 0.9)
        for name in ("class_weighted_loss", "mixed_precision", "aug_random_crop", "aug_flip"):
            flag(name)
        fractions_ok = all(isinstance(getattr(self, f), (int, float)) and not isinstance(getattr(self, f), bool)
                           for f in ("val_fraction", "test_fraction"))
        if fractions_ok and self.val_fraction + self.test_fraction >= 0.95:
            problems.append("val_fraction + test_fraction must leave at least 5% for training, "
                            f"got {self.val_fraction + self.test_fraction:g}")
        for name in ("data_path", "labels_csv", "name"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be text, got {getattr(self, name)!r}")
        if isinstance(self.name, str) and len(self.name) > 80:
            problems.append(f"name must be at most 80 characters, got {len(self.name)}")
        if self.dataset in FOLDER_DATASETS and not self.data_path:
            problems.append(f"data_path is required for dataset {self.dataset}: the folder of images")
        if self.model in ("simple-cnn",) and isinstance(self.image_size, int) and self.image_size < 8:
            problems.append(f"image_size must be >= 8 for simple-cnn (three 2x2 poolings), got {self.image_size}")
        return problems

    # --- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a dict; unknown keys raise ConfigError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError([f"unknown setting {key!r}" for key in unknown])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def with_updates(self, assignments: list[str]) -> "RunConfig":
        """Apply `key=value` strings (values parsed as JSON when they can be, else text)."""
        values = self.to_dict()
        problems = []
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                problems.append(f"expected key=value, got {assignment!r}")
                continue
            if key not in values:
                problems.append(f"unknown setting {key!r}")
                continue
            values[key] = parse_value(raw.strip(), type(values[key]))
        if problems:
            raise ConfigError(problems)
        return RunConfig(**values)


def parse_value(raw: str, wanted: type):
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'adam' -> 'adam'; text fields stay text."""
    if wanted is str:
        return raw
    try:
        value = json.loads(raw.lower() if raw.lower() in ("true", "false") else raw)
    except json.JSONDecodeError:
        return raw
    if wanted is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class ConfigError(ValueError):
    """A rejected config; `problems` holds every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


__all__ = ["RunConfig", "ConfigError", "DATASETS", "MODELS", "OPTIMIZERS", "SCHEDULERS",
           "DATASET_DEFAULTS"]
