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
