"""RunConfig: every knob of a training run, each described once, its validation and its JSON form.

Each field carries a Setting (label, help, group, choices, range) in its dataclass metadata.
validate(), the Train and Clone forms, `--set` parsing and `python -m core train --help` are all
derived from those descriptions, so a new setting is one line here.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from core.models.registry import MODEL_SPECS, MODELS

CONFIG_SCHEMA_VERSION = 2     # 1: config.json before the version was written (same fields)

DATASET_LABELS = {"digits": "digits (built in, offline)", "image-folder": "image folder (root/<class>/*.png)",
                  "csv-folder": "CSV-labelled folder", "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST",
                  "cifar10": "CIFAR-10"}
DATASETS = tuple(DATASET_LABELS)
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

# Where a setting is asked for: "data" by the dataset picker, the others by the Train form, in this
# order; "more" sits folded under "More settings".
GROUPS = ("data", "basics", "optimisation", "augmentation", "more")


@dataclass(frozen=True)
class Setting:
    """What a person and the code need to know about one RunConfig field."""
    label: str
    group: str
    help: str = ""
    choices: tuple = ()
    choice_labels: dict | None = None   # choice -> what a person reads
    low: float | None = None
    high: float | None = None
    low_open: bool = False              # low itself is not allowed
    max_length: int | None = None       # text fields
    also: tuple = ()                    # words allowed besides a number ("auto" for batch_size)
    step: float | None = None           # form hint: the +/- step of a number
    format: str | None = None           # form hint: how a number is shown
    pretrained_only: bool = False       # means something only for a model with ImageNet weights
    # Filled in from the dataclass field:
    name: str = ""
    kind: type = object
    default: Any = None

    def rule(self) -> str:
        """The allowed values in plain words: 'one of sgd, adam', '> 0 and <= 10', 'true or false'."""
        if self.choices:
            if self.choice_labels and len(self.choices) <= 2:
                return " or ".join(f"{c} ({self.choice_labels[c]})" for c in self.choices)
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "text" + (f" of at most {self.max_length} characters" if self.max_length else "")
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_number(self.high)}")
        kind = "an integer" if self.kind is int else "a number"
        words = "".join(f" or {word}" for word in self.also)
        return kind + (" " + " and ".join(bounds) if bounds else "") + words

    def problem(self, value) -> str | None:
        """Why `value` is not allowed here, in plain words; None when it is fine."""
        name = self.name
        if self.also and isinstance(value, str) and value in self.also:
            return None
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{name} must be true or false, got {value!r}"
        if self.kind is str:
            if not isinstance(value, str):
                return f"{name} must be text, got {value!r}"
            if self.max_length is not None and len(value) > self.max_length:
                return f"{name} must be at most {self.max_length} characters, got {len(value)}"
        else:
            integer = self.kind is int
            if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
                words = "".join(f" or {word}" for word in self.also)
                return f"{name} must be {'an integer' if integer else 'a number'}{words}, got {value!r}"
            if not math.isfinite(value):
                return f"{name} must be finite, got {value}"
            if self.low is not None and (value <= self.low if self.low_open else value < self.low):
                return f"{name} must be {'>' if self.low_open else '>='} {_number(self.low)}, got {_number(value)}"
            if self.high is not None and value > self.high:
                return f"{name} must be <= {_number(self.high)}, got {_number(value)}"
        if self.choices and value not in self.choices:
            rule = self.rule()
            return f"{name} must be {rule}{';' if rule.startswith('one of') else ','} got {value!r}"
        return None

    def parse(self, raw: str):
        """Text from the command line -> a value: '3' -> 3, '1e-3' -> 0.001, 'true' -> True.
        Text that does not parse is returned as it is, for problem() to explain."""
        if self.kind is str:
            return raw
        try:
            value = json.loads(raw.lower() if raw.lower() in ("true", "false") else raw)
        except json.JSONDecodeError:
            return raw
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value


def _number(value: float) -> str:
    """2147483647 stays 2147483647 (not 2.14748e+09); 0.001 stays 0.001."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def setting(default, label: str, group: str, **description) -> Any:
    return field(default=default, metadata={"setting": Setting(label, group, **description)})


@dataclass
class RunConfig:
    # data (asked for by the dataset picker)
    dataset: str = setting("digits", "Dataset", "data", choices=DATASETS, choice_labels=DATASET_LABELS,
                           help="digits ships with scikit-learn and works offline; folders hold your images; "
                                "MNIST, Fashion-MNIST and CIFAR-10 are read from data_path")
    data_path: str = setting("", "Folder", "data",
                             help="image-folder / csv-folder: the folder of images; MNIST, Fashion-MNIST, "
                                  "CIFAR-10: the folder holding their original files, read where they are "
                                  "(default ./data)")
    labels_csv: str = setting("", "Labels CSV (filename,label)", "data",
                              help="csv-folder only; default <folder>/labels.csv")
    image_size: int = setting(16, "Image size", "data", low=4, high=1024, step=1,
                              help="square side the images are resized to")
    channels: int = setting(1, "Channels", "data", choices=(1, 3), choice_labels={1: "grayscale", 3: "RGB"})
    # the basics
    name: str = setting("", "Run name", "basics", max_length=80, help="optional; shown in the run picker")
    model: str = setting("simple-cnn", "Model", "basics", choices=MODELS,
                         help="; ".join(f"{name}: {spec.label}" for name, spec in MODEL_SPECS.items()))
    epochs: int = setting(10, "Epochs", "basics", low=1, high=100_000, step=1)
    batch_size: int | str = setting(64, "Batch size", "basics", low=1, high=65_536, step=1, also=("auto",),
                                    help="samples per forward pass; auto (CUDA only): a short probe finds the "
                                         "largest that fits in GPU memory and runs near peak throughput, and the "
                                         "lr is scaled with it (see lr_reference_batch)")
    pretrained: bool = setting(True, "Pretrained (ImageNet)", "basics", pretrained_only=True,
                               help="imagenet-* models: start from torchvision's ImageNet weights, read from "
                                    "$TORCH_HOME/hub/checkpoints, and normalise with ImageNet's mean and std; "
                                    "other models always start fresh")
    freeze_backbone: bool = setting(False, "Freeze backbone", "basics", pretrained_only=True,
                                    help="pretrained models: train only the new head")
    # optimisation
    optimizer: str = setting("adamw", "Optimizer", "optimisation", choices=("sgd", "adam", "adamw"))
    lr: float = setting(2e-3, "Learning rate", "optimisation", low=0, low_open=True, high=10, step=1e-4,
                        format="%g", help="the peak learning rate for onecycle")
    weight_decay: float = setting(1e-4, "Weight decay", "optimisation", low=0, high=1, step=1e-4, format="%g")
    momentum: float = setting(0.9, "Momentum (sgd)", "optimisation", low=0, high=1, step=0.05, format="%g",
                              help="sgd only; Nesterov momentum when > 0")
    scheduler: str = setting("cosine", "LR schedule", "optimisation",
                             choices=("none", "step", "cosine", "onecycle", "plateau"),
                             help="onecycle steps every batch, the others every epoch")
    warmup_fraction: float = setting(0.3, "Warm-up share (onecycle)", "optimisation", low=0, low_open=True,
                                     high=0.9, step=0.05, format="%g",
                                     help="onecycle: the share of all steps spent raising the lr to its peak")
    step_size: int = setting(5, "Step size (epochs)", "optimisation", low=1, high=100_000, step=1,
                             help="step schedule: epochs between decays")
    gamma: float = setting(0.1, "Decay factor", "optimisation", low=0, low_open=True, high=1, step=0.05,
                           format="%g", help="step / plateau schedules: the factor the lr is multiplied by")
    finetune_head_epochs: int = setting(0, "Head-only epochs first (0 = off)", "optimisation", low=0,
                                        pretrained_only=True,
                                        high=100_000, step=1,
                                        help="pretrained models: train only the head for this many epochs, "
                                             "then every layer, the backbone at lr x backbone_lr_factor")
    backbone_lr_factor: float = setting(0.1, "Backbone lr factor", "optimisation", low=0, low_open=True, high=1,
                                        pretrained_only=True,
                                        step=0.05, format="%g",
                                        help="pretrained models: the backbone's lr as a fraction of lr")
    label_smoothing: float = setting(0.0, "Label smoothing", "optimisation", low=0, high=0.99, step=0.05,
                                     format="%g")
    # augmentation, applied to whole batches on the device
    aug_random_crop: bool = setting(False, "Random crop", "augmentation",
                                    help="a shift of up to 1/8 of the side, as a crop of the padded image")
    crop_padding: int = setting(0, "Crop padding (pixels)", "augmentation", low=0, high=256, step=1,
                                help="random crop: the largest shift, in whole pixels; 0: 1/8 of the side")
    aug_flip: bool = setting(False, "Horizontal flip", "augmentation")
    aug_rotation: float = setting(0.0, "Rotation (degrees)", "augmentation", low=0, high=180, step=5.0,
                                  format="%g", help="largest random rotation either way")
    aug_color_jitter: float = setting(0.0, "Colour jitter", "augmentation", low=0, high=1, step=0.05,
                                      format="%g", help="brightness and contrast strength")
    tta_flip: bool = setting(False, "Test-time flip", "augmentation",
                             help="validation, evaluation and prediction average the logits of each image and "
                                  "its mirror image (for data where a mirrored image is the same class)")
    # more
    class_weighted_loss: bool = setting(False, "Class-weighted loss", "more",
                                        help="weigh each class by the inverse of its share of the training split")
    mixed_precision: str = setting("auto", "Mixed precision", "more", choices=("auto", "bf16", "fp16", "off"),
                                   help="auto: bf16 autocast on GPUs that support it, fp16 with loss scaling on "
                                        "older ones, off on CPU; bf16 and fp16 are CUDA only")
    compile: str = setting("off", "Compile (torch.compile)", "more",
                           choices=("off", "auto", "default", "reduce-overhead", "max-autotune-no-cudagraphs"),
                           help="compiles the training forward and backward (the first steps are slow); auto: "
                                "on CUDA, reduce-overhead (CUDA graphs, CUDA only) for small models at small "
                                "batches, else default; off on a CPU, where compiling costs more than it gains; "
                                "checkpoints keep the plain module's weights")
    accumulate_steps: int = setting(1, "Gradient accumulation steps", "more", low=1, high=1024, step=1,
                                    help="batches of batch_size per optimizer step: the step sees batch_size x "
                                         "accumulate_steps samples with the memory of one batch")
    lr_reference_batch: int = setting(128, "Batch the lr is for (batch auto)", "more", low=1, high=65_536,
                                      step=1, help="batch_size auto: lr is meant for this many samples per step "
                                                   "and is scaled to the batch found (x ratio for sgd, "
                                                   "x sqrt(ratio) for adam and adamw)")
    early_stopping_patience: int = setting(0, "Early-stopping patience (0 = off)", "more", low=0, high=100_000,
                                           step=1, help="epochs without improvement of best_metric")
    grad_clip: float = setting(0.0, "Gradient clipping (0 = off)", "more", low=0, high=1e6, step=0.5,
                               format="%g", help="largest gradient norm")
    val_fraction: float = setting(0.15, "Validation fraction", "more", low=0, low_open=True, high=0.9,
                                  step=0.05, format="%g")
    test_fraction: float = setting(0.15, "Test fraction", "more", low=0, high=0.9, step=0.05, format="%g",
                                   help="MNIST, Fashion-MNIST and CIFAR-10 use their official test split")
    seed: int = setting(0, "Seed", "more", low=0, high=2**31 - 1, step=1,
                        help="split, initialisation, sample order and augmentation")
    device: str = setting("auto", "Device", "more", choices=("auto", "cpu", "cuda"),
                          help="auto: CUDA when present")
    log_interval: int = setting(20, "Log every N steps", "more", low=1, high=100_000, step=1,
                                help="training steps between metric lines")
    probe_interval: int = setting(100, "Probe every N steps (0 = epoch ends)", "more", low=0, high=100_000,
                                  step=1, help="weight and gradient histograms and statistics, update ratios and "
                                               "dead ReLU units, also at every epoch's last step (probes.jsonl)")
    best_metric: str = setting("val_acc", "Best checkpoint by", "more", choices=("val_acc", "val_loss"),
                               help="what best.pt, early stopping and 'best' follow")
    num_workers: int = setting(2, "DataLoader workers", "more", low=0, high=64, step=1,
                               help="for folders too large for memory, streamed from disk")

    @classmethod
    def for_dataset(cls, dataset: str, shape: dict | None = None, **overrides) -> "RunConfig":
        """A config with the sensible defaults of `dataset`, the image size and channels its data
        proposes (`shape`: core.data.folders.proposed_config reads them from a folder), then
        `overrides` on top."""
        values = dict(DATASET_DEFAULTS.get(dataset, {}))
        values.update(shape or {})
        # A pretrained network's own input size beats the data's: its weights were trained at it.
        spec = MODEL_SPECS.get(overrides.get("model", values.get("model", cls.model)))
        if spec is not None and spec.natural_size:
            values["image_size"] = spec.natural_size
        values.update(overrides)
        return cls(dataset=dataset, **values)

    # --- validation -------------------------------------------------------------------
    def validate(self) -> list[str]:
        """Every problem with this config at once, in plain words; [] when it is fine."""
        found = {name: p for name, s in SETTINGS.items() if (p := s.problem(getattr(self, name)))}
        problems, bad = list(found.values()), set(found)
        if not bad & {"val_fraction", "test_fraction"} and self.val_fraction + self.test_fraction >= 0.95:
            problems.append("val_fraction + test_fraction must leave at least 5% for training, "
                            f"got {self.val_fraction + self.test_fraction:g}")
        if self.dataset in FOLDER_DATASETS and not self.data_path:
            problems.append(f"data_path is required for dataset {self.dataset}: the folder of images")
        if not bad & {"model", "image_size"}:
            spec = MODEL_SPECS[self.model]
            if self.image_size < spec.min_input_size:
                natural = f" (its weights were trained at {spec.natural_size})" if spec.natural_size else ""
                problems.append(f"image_size must be >= {spec.min_input_size} for {self.model}{natural}, "
                                f"got {self.image_size}")
        if not bad & {"model", "pretrained", "freeze_backbone", "finetune_head_epochs", "epochs"}:
            problems += self._fine_tune_problems()
        if self.device == "cpu" and not bad & {"batch_size", "mixed_precision", "compile"}:
            problems += self.cuda_only_problems("device is cpu")
        return problems

    def cuda_only_problems(self, why: str) -> list[str]:
        """The settings that need a CUDA GPU, each with its reason, for a run that will not have one
        (`why`: 'device is cpu', 'no CUDA GPU is available')."""
        problems = []
        if self.batch_size == "auto":
            problems.append(f"batch_size auto needs a CUDA GPU (it probes the GPU's memory and speed), and {why}: "
                            f"choose a number, e.g. {DATASET_DEFAULTS.get(self.dataset, {}).get('batch_size', 64)}")
        if self.mixed_precision in ("bf16", "fp16"):
            problems.append(f"mixed_precision {self.mixed_precision} needs a CUDA GPU, and {why}: choose auto or off")
        if self.compile == "reduce-overhead":
            problems.append(f"compile reduce-overhead records CUDA graphs, which need a CUDA GPU, and {why}: "
                            "choose default, auto or off")
        return problems

    def _fine_tune_problems(self) -> list[str]:
        asked = [name for name, on in (("freeze_backbone", self.freeze_backbone),
                                       ("finetune_head_epochs", self.finetune_head_epochs > 0)) if on]
        if not asked:
            return []
        if not MODEL_SPECS[self.model].pretrainable:
            pretrainable = ", ".join(name for name, spec in MODEL_SPECS.items() if spec.pretrainable)
            return [f"{' and '.join(asked)} needs a pretrained backbone, and {self.model} has none "
                    f"(those with one: {pretrainable})"]
        if not self.pretrained:
            return [f"{' and '.join(asked)} needs pretrained=true: a random backbone would stay random"]
        if len(asked) == 2:
            return ["freeze_backbone trains only the head throughout, finetune_head_epochs only at first: "
                    "choose one"]
        if self.finetune_head_epochs >= self.epochs:
            return [f"finetune_head_epochs must be < epochs ({self.epochs}), or the backbone never trains "
                    "(freeze_backbone says that)"]
        return []

    # --- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """config.json: the settings plus the schema version they were written with."""
        return json.dumps({"schema_version": CONFIG_SCHEMA_VERSION, **self.to_dict()}, indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        """Build from a dict; unknown keys raise ConfigError naming them."""
        config, unknown = read_config_values(values)
        if unknown:
            raise ConfigError([f"unknown setting {key!r}" for key in sorted(unknown)])
        return config

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        return cls.from_dict(json.loads(text))

    def with_updates(self, assignments: list[str]) -> "RunConfig":
        """Apply `key=value` strings, each parsed as its setting's type."""
        values = self.to_dict()
        problems = []
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            if not sep or not key:
                problems.append(f"expected key=value, got {assignment!r}")
            elif key not in SETTINGS:
                problems.append(f"unknown setting {key!r}")
            else:
                values[key] = SETTINGS[key].parse(raw.strip())
        if problems:
            raise ConfigError(problems)
        keys = {assignment.partition("=")[0].strip() for assignment in assignments}
        natural = getattr(MODEL_SPECS.get(values["model"]), "natural_size", None)
        if "model" in keys and "image_size" not in keys and natural:
            values["image_size"] = natural      # as for_dataset does: the size the weights were trained at
        return RunConfig(**values)


_KINDS = {"int": int, "float": float, "bool": bool, "str": str}
SETTINGS: dict[str, Setting] = {   # a number that also allows a word ("int | str") is of its default's kind
    f.name: dataclasses.replace(f.metadata["setting"], name=f.name, kind=_KINDS.get(f.type, type(f.default)),
                                default=f.default)
    for f in dataclasses.fields(RunConfig)}

# Values older config files hold that now mean something else: mixed_precision was true/false.
_LEGACY_VALUES = {"mixed_precision": {True: "auto", False: "off"}}


@dataclass(frozen=True)
class Recipe:
    """A named set of settings that is known to work, one click in the Train form."""
    name: str
    label: str
    description: str
    dataset: str
    values: dict
    gpu_sized: bool = False      # its epochs and batch size are a GPU's: on a CPU it runs for hours

    def config(self, **overrides) -> RunConfig:
        return RunConfig.for_dataset(self.dataset, **{**self.values, **overrides})


# Measured on an H100 (shared/notes/gpu.md and bench/gpu_train.py): 95.38% Fashion-MNIST test accuracy in
# 54.6 s of training with a hand-written loop of these settings.
RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (
    Recipe("fast", "Fast Fashion-MNIST", "resnet18, 30 epochs at batch 512, SGD with Nesterov momentum, "
           "onecycle to lr 0.4, label smoothing, crop + flip, test-time flip: about 95% test accuracy in about "
           "a minute on one H100", "fashion-mnist",
           dict(name="fast recipe", model="resnet18", epochs=30, batch_size=512, optimizer="sgd", lr=0.4,
                momentum=0.9, weight_decay=5e-4, scheduler="onecycle", warmup_fraction=0.25,
                label_smoothing=0.1, aug_random_crop=True, crop_padding=2, aug_flip=True, tta_flip=True,
                mixed_precision="auto", val_fraction=0.05), gpu_sized=True),
)}


def read_config_values(values: dict) -> tuple[RunConfig, dict]:
    """(config, unknown) from a config.json object of any version: keys this version does not know
    are returned aside (never dropped from the file), missing keys take their defaults. The values
    are not checked: validate() says what is wrong with them."""
    if not isinstance(values, dict):
        raise ConfigError([f"config must be a JSON object, got {type(values).__name__}"])
    values = {k: v for k, v in values.items() if k != "schema_version"}
    known = {k: v for k, v in values.items() if k in SETTINGS}
    for key, meanings in _LEGACY_VALUES.items():
        if isinstance(known.get(key), bool):
            known[key] = meanings[known[key]]
    return RunConfig(**known), {k: v for k, v in values.items() if k not in SETTINGS}


def settings_help() -> str:
    """Every setting, grouped, with its rule, default and help: `python -m core train --help`."""
    lines = []
    for group in GROUPS:
        lines.append(f"{group}:")
        for s in (s for s in SETTINGS.values() if s.group == group):
            lines.append(f"  {s.name} = {s.default!r}: {s.label}; {s.rule()}" + (f". {s.help}" if s.help else ""))
    return "\n".join(lines)


class ConfigError(ValueError):
    """A rejected config; `problems` holds every reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


__all__ = ["RunConfig", "ConfigError", "Setting", "SETTINGS", "RECIPES", "Recipe", "GROUPS", "DATASETS",
           "DATASET_DEFAULTS", "DATASET_LABELS", "FOLDER_DATASETS", "read_config_values", "settings_help"]
