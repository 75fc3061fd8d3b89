"""The model registry: for each model, how to build it and what its parts are.

A ModelSpec says how to build the network for any (channels, height, width, classes), which module
is its classifier head (the rest is the backbone: the parameter groups of a fine-tune), which
modules' outputs are feature maps (shallow to deep; the deepest is where Grad-CAM looks), which
module's output is the embedding the head reads (for a projector), and its minimum input size.
The imagenet-* models also name torchvision's ImageNet weights (core.models.pretrained finds the file),
the input size those were trained at, and the three channels they read.

This module does not import torch until a model is built, so settings and forms can list the models
without paying for torch; the networks themselves live in core.models.nets.
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
    weights: str | None = None              # torchvision's ImageNet weights, "ResNet18_Weights.IMAGENET1K_V1"
    natural_size: int | None = None         # the image side those weights were trained at
    input_channels: int | None = None       # channels the network reads whatever the data has (None: the data's)

    @property
    def pretrainable(self) -> bool:
        return self.weights is not None


# torchvision's ImageNet weights expect inputs normalised with ImageNet's own statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mlp(c, h, w, k):
    from core.models.nets import MLP, kaiming_init
    return kaiming_init(MLP(c, h, w, k))


def _simple_cnn(c, h, w, k):
    from core.models.nets import SimpleCNN, kaiming_init
    return kaiming_init(SimpleCNN(c, h, w, k))


def _resnet(name: str):
    def build(c, h, w, k):
        from core.models.nets import small_input_resnet
        return small_input_resnet(name, c, k)
    return build


def _imagenet(arch: str):
    def build(c, h, w, k):
        from core.models.nets import imagenet_classifier
        return imagenet_classifier(arch, k)
    return build


def _imagenet_spec(arch: str, label: str, weights: str, **parts) -> ModelSpec:
    # Five stride-2 stages: 32 pixels leave a 1x1 map at the end; 224 is what the weights saw.
    return ModelSpec(f"imagenet-{arch}", f"{label}, ImageNet weights (torchvision), new head", _imagenet(arch),
                     weights=weights, natural_size=224, input_channels=3, min_input_size=32, **parts)


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
    _imagenet_spec("resnet18", "ResNet-18", "ResNet18_Weights.IMAGENET1K_V1", **_RESNET_PARTS),
    _imagenet_spec("resnet50", "ResNet-50", "ResNet50_Weights.IMAGENET1K_V2", **_RESNET_PARTS),
    _imagenet_spec("mobilenet_v3_large", "MobileNetV3-Large", "MobileNet_V3_Large_Weights.IMAGENET1K_V2",
                   head="classifier.3", embedding="classifier.2",
                   feature_layers=("features.3", "features.6", "features.12", "features.16")),
    _imagenet_spec("efficientnet_b0", "EfficientNet-B0", "EfficientNet_B0_Weights.IMAGENET1K_V1",
                   head="classifier.1", embedding="classifier.0",
                   feature_layers=("features.2", "features.3", "features.5", "features.8")),
    _imagenet_spec("convnext_tiny", "ConvNeXt-Tiny", "ConvNeXt_Tiny_Weights.IMAGENET1K_V1",
                   head="classifier.2", embedding="classifier.1",
                   feature_layers=("features.1", "features.3", "features.5", "features.7")),
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
    model = spec.build(channels, height, width, classes)
    start_near_chance(model.get_submodule(spec.head))
    return model


HEAD_INIT_STD = 1e-3    # a head's starting weights: small enough that its first outputs are near 0


def start_near_chance(head: "nn.Module") -> None:
    """A classifier head whose first outputs are near 0, so the first loss is ln(classes), a uniform
    guess's. With the usual initialisations it was larger (simple-cnn on digits: ~7 against ln 10 =
    2.3) and the first steps went to undoing it. Every layer before it still starts as its network's
    own initialisation says, so gradients flow from the first step."""
    from torch import nn
    nn.init.normal_(head.weight, std=HEAD_INIT_STD)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def model_input_shape(name: str, channels: int, height: int, width: int) -> tuple[int, int, int]:
    """What the network reads for data of this shape: an ImageNet network reads 3 channels, and
    grayscale data is repeated to 3 (core.data.augment)."""
    return (model_spec(name).input_channels or channels, height, width)


def input_normalisation(name: str, pretrained: bool, mean: list[float], std: list[float]) -> tuple[list, list]:
    """(mean, std) the inputs are normalised with, one value per channel the network reads: ImageNet's
    for pretrained weights, else the data's own (repeated when grayscale feeds a 3-channel network)."""
    spec = model_spec(name)
    if pretrained and spec.pretrainable:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    wanted = spec.input_channels or len(mean)
    if len(mean) == 1 and wanted > 1:
        return list(mean) * wanted, list(std) * wanted
    return list(mean), list(std)


def set_backbone_frozen(model: "nn.Module", name: str, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head. A frozen backbone's BatchNorm layers also keep
    their running statistics: call again after each model.train(), which turns them back on."""
    from torch import nn
    head = model_spec(name).head
    for param in parameter_groups(model, name)["backbone"]:
        param.requires_grad_(not frozen)
    if frozen:
        for module_name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not module_name.startswith(head + "."):
                module.eval()


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
