import pytest
import torch

from core.models.registry import build_model, parameter_counts


@pytest.mark.parametrize("name", ["mlp", "simple-cnn", "resnet18", "resnet34"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (3, 20, 28)])
def test_output_shape_for_any_input(name, shape):
    model = build_model(name, *shape, classes=7).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_resnet_is_adapted_to_small_inputs():
    model = build_model("resnet18", 1, 16, 16, 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


def test_parameter_counts_and_unknown_names():
    counts = parameter_counts(build_model("mlp", 1, 8, 8, 10))
    assert counts["total"] == counts["trainable"] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", 1, 8, 8, 10)
    with pytest.raises(ValueError, match="at least 8x8"):
        build_model("simple-cnn", 1, 4, 4, 10)


@pytest.mark.parametrize("name", ["mlp", "simple-cnn", "resnet18", "resnet34", "imagenet-resnet18",
                                  "imagenet-resnet50", "imagenet-mobilenet_v3_large", "imagenet-efficientnet_b0",
                                  "imagenet-convnext_tiny"])
def test_registry_describes_head_embedding_and_feature_layers(name):
    from core.models.registry import model_spec, parameter_groups
    spec = model_spec(name)
    model = build_model(name, 3, 32, 32, 5)
    head = model.get_submodule(spec.head)
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5
    seen = {}
    hooks = [model.get_submodule(path).register_forward_hook(
        lambda module, inputs, output, path=path: seen.__setitem__(path, output.detach().clone()))
        for path in (spec.embedding, *spec.feature_layers)]
    model.eval()(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert seen[spec.embedding].flatten(1).shape == (2, head.in_features)    # what the head reads
    sides = [seen[path].shape[-1] for path in spec.feature_layers]
    assert all(seen[path].dim() == 4 for path in spec.feature_layers) and sides == sorted(sides, reverse=True)
    groups = parameter_groups(model, name)
    assert {id(p) for p in groups["head"]} == {id(p) for p in head.parameters()}
    assert len(groups["backbone"]) + len(groups["head"]) == len(list(model.parameters()))


def test_imagenet_models_read_three_channels_at_their_natural_size_or_smaller():
    from core.models.registry import MODEL_SPECS, model_input_shape
    imagenet = [spec for name, spec in MODEL_SPECS.items() if name.startswith("imagenet-")]
    assert len(imagenet) == 5 and all(spec.pretrainable and spec.natural_size == 224 for spec in imagenet)
    model = build_model("imagenet-mobilenet_v3_large", 1, 32, 32, 4).eval()     # grayscale data, 3-channel stem
    assert model_input_shape("imagenet-mobilenet_v3_large", 1, 32, 32) == (3, 32, 32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ValueError, match="at least 32x32"):
        build_model("imagenet-resnet18", 3, 16, 16, 4)


def test_freezing_the_backbone_leaves_only_the_head_trainable():
    from core.models.registry import set_backbone_frozen
    model = build_model("imagenet-resnet18", 3, 32, 32, 4).train()
    set_backbone_frozen(model, "imagenet-resnet18", True)
    head = 512 * 4 + 4
    assert parameter_counts(model)["trainable"] == head
    assert not model.bn1.training and not model.layer4[1].bn2.training    # BN statistics kept too
    set_backbone_frozen(model, "imagenet-resnet18", False)
    assert parameter_counts(model)["trainable"] == parameter_counts(model)["total"]


# --- a fresh model's first loss ---------------------------------------------------------------------
def _batch(dataset: str, channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64 images as the training loop feeds them (uint8): digits' own, else random pixels of the
    shape of the set (MNIST, Fashion-MNIST, CIFAR-10 are files the tests do not have)."""
    if dataset == "digits":
        from conftest import tiny_digits
        from core.data.datasets import load_dataset
        split = load_dataset(tiny_digits(image_size=size)).splits["train"]
        return split.images[:64], split.labels[:64]
    generator = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (64, channels, size, size), dtype=torch.uint8, generator=generator),
            torch.randint(0, 10, (64,), generator=generator))


@pytest.mark.parametrize("name", ["mlp", "simple-cnn", "resnet18", "resnet34", "imagenet-resnet18",
                                  "imagenet-resnet50", "imagenet-mobilenet_v3_large", "imagenet-efficientnet_b0",
                                  "imagenet-convnext_tiny"])
@pytest.mark.parametrize("dataset, channels, size", [("digits", 1, 16), ("mnist", 1, 28), ("fashion-mnist", 1, 28),
                                                     ("cifar10", 3, 32)])
def test_a_fresh_models_first_loss_is_a_uniform_guesss(name, dataset, channels, size):
    """Within 15% of ln(classes) on each built-in dataset: the first steps learn instead of undoing
    large initial outputs (simple-cnn's first loss on digits was ~7, ln 10 = 2.3)."""
    import math

    import torch.nn.functional as F

    from core.data.augment import BatchPreprocessor
    from core.models.registry import input_normalisation, model_spec
    size = max(size, model_spec(name).min_input_size)           # the imagenet-* models: 32 and up
    images, labels = _batch(dataset, channels, size)
    scaled = images.float() / 255
    mean = scaled.mean(dim=(0, 2, 3)).tolist()
    std = scaled.std(dim=(0, 2, 3)).tolist()
    mean, std = input_normalisation(name, False, mean, std)       # the data's own statistics, as a run uses
    torch.manual_seed(0)
    model = build_model(name, model_spec(name).input_channels or channels, size, size, 10).train()
    loss = F.cross_entropy(model(BatchPreprocessor(mean, std)(images, train=False)), labels)
    assert abs(loss.item() - math.log(10)) < 0.15 * math.log(10), loss.item()
