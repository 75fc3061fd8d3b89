"""The networks themselves: classifiers built for any (channels, height, width, classes).

What each is called, what its head and feature layers are and how small its input may be is
core.models.registry' business (the registry); this module only holds the torch code.
"""
from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    def __init__(self, channels: int, height: int, width: int, classes: int, hidden=(256, 128)):
        super().__init__()
        layers, width_in = [nn.Flatten()], channels * height * width
        for size in hidden:
            layers += [nn.Linear(width_in, size), nn.ReLU(inplace=True), nn.Dropout(0.2)]
            width_in = size
        layers.append(nn.Linear(width_in, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class SimpleCNN(nn.Module):
    """Three conv+pool blocks and two linear layers (the SimpleCNN of the seed documents),
    with the flattened size computed from the input instead of fixed to 32x32."""

    def __init__(self, channels: int, height: int, width: int, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        flat = 64 * (height // 8) * (width // 8)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(flat, 512), nn.ReLU(inplace=True),
                                        nn.Dropout(0.5), nn.Linear(512, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def small_input_resnet(name: str, channels: int, classes: int) -> nn.Module:
    """torchvision's ResNet with a 3x3 stride-1 stem and no max-pool, for 8..64 pixel inputs
    (torchvision already Kaiming-initialises its convolutions)."""
    import torchvision.models as tvm
    model = getattr(tvm, name)(num_classes=classes)
    model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def imagenet_classifier(arch: str, classes: int) -> nn.Module:
    """torchvision's `arch` as published (3 input channels, its own stem), randomly initialised,
    with a head for `classes`; core.models.pretrained loads the ImageNet weights into all but the head."""
    import torchvision.models as tvm
    return getattr(tvm, arch)(weights=None, num_classes=classes)


def kaiming_init(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
