"""The model registry: for each model, how to build it and what its parts are.

A ModelSpec says how to build the network for any (channels, height, width, classes), which module
is its classifier head (the rest is the backbone: the parameter groups of a fine-tune), which
modules' outputs are feature maps (shallow to deep; the deepest is where Grad-CAM looks), which
module's output is the embedding the head reads (for a projector), and its minimum input size.

This module does not import torch until a model is built, so settings and forms can list the models
without paying for torch; the networks themselves live in core.nets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    name: str
    label: str                              # what a person reads in a picker
    build: Callable[[int, int, int, int], "nn.Module"]
    head: str                               # module path of the classifier head
    embedding: str                          # module whose output (flattened) the head reads
    feature_layers: tuple[str, ...] = ()    # modules with spatial outputs, shallow to deep
    min_input_size: int = 1                 # smallest image side the network accepts


def _mlp(c, h, w, k):
    from core.nets import MLP, kaiming_init
    return kaiming_init(MLP(c, h, w, k))


def _simple_cnn(c, h, w, k):
    from core.nets import SimpleCNN, kaiming_init
    return kaiming_init(SimpleCNN(c, h, w, k))


def _resnet(name: str):
    def build(c, h, w, k):
        from core.nets import small_input_resnet
        return small_input_resnet(name, c, k)
    return build


_RESNET_PARTS = dict(head="fc", embedding="avgpool", feature_layers=("layer1", "layer2", "layer3", "layer4"))

MODEL_SPECS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("mlp", "MLP: two hidden layers (256, 128)", _mlp, head="net.7", embedding="net.5"),
    ModelSpec("simple-cnn", "simple CNN: three conv blocks, two linear layers", _simple_cnn,
              head="classifier.4", embedding="classifier.2",
              feature_layers=("features.1", "features.4", "features.7"),
              min_input_size=8),   # three 2x2 poolings
    ModelSpec("resnet18", "ResNet-18, small-input stem (3x3, no max-pool)", _resnet("resnet18"),
              **_RESNET_PARTS),
    ModelSpec("resnet34", "ResNet-34, small-input stem (3x3, no max-pool)", _resnet("resnet34"),
              **_RESNET_PARTS),
)}
MODELS = tuple(MODEL_SPECS)


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_SPECS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODEL_SPECS[name]


def build_model(name: str, channels: int, height: int, width: int, classes: int) -> "nn.Module":
    spec = model_spec(name)
    if min(height, width) < spec.min_input_size:
        raise ValueError(f"{name} needs inputs of at least {spec.min_input_size}x{spec.min_input_size}, "
                         f"got {height}x{width}")
    return spec.build(channels, height, width, classes)


def parameter_groups(model: "nn.Module", name: str) -> dict[str, list]:
    """{"backbone": [...], "head": [...]}: the parameters of the classifier head and of the rest."""
    prefix = model_spec(name).head + "."
    groups: dict[str, list] = {"backbone": [], "head": []}
    for param_name, param in model.named_parameters():
        groups["head" if param_name.startswith(prefix) else "backbone"].append(param)
    return groups


def parameter_counts(model: "nn.Module") -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
