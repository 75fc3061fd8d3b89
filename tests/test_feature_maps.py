"""Feature maps (core.models.feature_maps): a layer's channels for one image, strongest first, its grid;
the errors for a model without feature layers and an unknown layer; the Model page's section."""
import numpy as np
import pytest
import torch

from conftest import no_errors
from core.models.feature_maps import channel_grid, feature_maps, grid_caption, input_as_seen, model_input
from core.models.inspection import fresh_model
from core.models.registry import model_spec
from pages.common.site import page_path

SHAPE = (1, 16, 16)
MEAN, STD = [0.5], [0.25]


@pytest.fixture(scope="module")
def cnn():
    return fresh_model("simple-cnn", SHAPE, 10)


def an_image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, SHAPE, dtype=np.uint8)


@pytest.mark.parametrize("layer, channels", [("features.1", 16), ("features.4", 32), ("features.7", 64)])
def test_channels_are_the_layers_own_strongest_first(cnn, layer, channels):
    inputs = model_input(an_image(), MEAN, STD)
    maps = feature_maps(cnn, "simple-cnn", inputs, layer)
    assert maps.channels.dtype == np.float32 and maps.channels.shape[0] == channels == maps.output_shape[0]
    assert cnn.features[int(layer.split(".")[1]) - 1].out_channels == channels     # the ReLU after a conv
    assert list(maps.strength) == sorted(maps.strength, reverse=True)
    assert np.allclose(maps.strength, maps.channels.mean(axis=(1, 2)))
    # The same channels as the layer's output, reordered: channel index[i] of the output is the i-th shown.
    seen = {}

    def keep(module, args, output):
        seen["out"] = output[0].clone()
    hook = cnn.get_submodule(layer).register_forward_hook(keep)
    try:
        with torch.no_grad():
            cnn.eval()(inputs)
    finally:
        hook.remove()
    assert np.allclose(maps.channels, seen["out"].numpy()[maps.index], atol=1e-5)
    assert sorted(maps.index) == list(range(channels))


def test_model_modes_and_hooks_are_left_as_they_were(cnn):
    cnn.train()
    cnn.features[0].eval()          # as a frozen backbone's BatchNorm stays in eval while the rest trains
    feature_maps(cnn, "simple-cnn", model_input(an_image(), MEAN, STD), "features.4")
    assert cnn.training and not cnn.features[0].training
    assert not any(module._forward_hooks for module in cnn.modules())
    with pytest.raises(ValueError):
        feature_maps(cnn, "simple-cnn", model_input(an_image(), MEAN, STD), "classifier.1")
    assert not any(module._forward_hooks for module in cnn.modules())     # removed after an error too
    cnn.eval()


def test_the_grid_tiles_the_channels_with_a_gap():
    channels = np.random.default_rng(0).normal(size=(10, 4, 5)).astype(np.float32)
    channels[3] = 7.0                                       # a constant channel: black, not a division by 0
    grid, shown = channel_grid(channels, side=1)            # side 1: no enlargement
    assert shown == 10 and grid.dtype == np.uint8
    assert grid.shape == (3 * 4 + 2, 4 * 5 + 3)             # 4 columns, 3 rows, 1-pixel gaps
    assert grid[:4, :5].min() == 0 and grid[:4, :5].max() == 255      # each tile min-max normalised
    assert (grid[:4, 3 * 6:3 * 6 + 5] == 0).all()
    assert (grid[4, :] == 255).all() and (grid[:, 5] == 255).all()    # the gaps
    many, shown = channel_grid(np.ones((100, 2, 2), np.float32), limit=64, side=1)
    assert shown == 64 and many.shape == (8 * 3 - 1, 8 * 3 - 1)
    enlarged, _ = channel_grid(channels, side=80)           # 4 columns of 20 pixels: tiles 4x enlarged
    assert enlarged.shape == (3 * 16 + 2, 4 * 20 + 3)


def test_the_input_comes_back_as_the_model_sees_it():
    image = an_image()
    assert np.array_equal(input_as_seen(model_input(image, MEAN, STD), MEAN, STD, side=1), image[0])
    three = model_input(image, MEAN * 3, STD * 3)           # grayscale repeated for a 3-channel network
    assert three.shape == (1, 3, 16, 16) and input_as_seen(three, MEAN * 3, STD * 3, side=32).shape == (32, 32, 3)


def test_the_caption_says_how_many_of_how_many():
    maps = feature_maps(fresh_model("simple-cnn", SHAPE, 10), "simple-cnn", model_input(an_image(), MEAN, STD),
                        "features.7")
    _, shown = channel_grid(maps.channels, limit=16)
    assert grid_caption(maps, shown) == "16 of 64 channels, strongest first, layer features.7, output 64×4×4"


def test_a_model_without_feature_layers_is_refused():
    assert model_spec("mlp").feature_layers == ()
    with pytest.raises(ValueError, match=r"'net\.1'.*mlp has no feature layers \(no convolutions\): feature maps "
                                         r"need a convolutional model"):
        feature_maps(fresh_model("mlp", SHAPE, 10), "mlp", model_input(an_image(), MEAN, STD), "net.1")


def test_an_unknown_or_flat_layer_is_refused_naming_the_layers(cnn):
    inputs = model_input(an_image(), MEAN, STD)
    layers = "features.1, features.4, features.7"
    with pytest.raises(ValueError, match=f"simple-cnn has no layer 'conv9'; .*{layers}"):
        feature_maps(cnn, "simple-cnn", inputs, "conv9")
    flat = rf"'classifier.1' of simple-cnn outputs \(1, 512\), not a spatial map.*{layers}"
    with pytest.raises(ValueError, match=flat):
        feature_maps(cnn, "simple-cnn", inputs, "classifier.1")
    assert feature_maps(cnn, "simple-cnn", inputs, "features.0").output_shape == (16, 16, 16)    # any module


def open_section(app):
    app.session_state["m_fm_open"] = True          # the Feature maps expander unfolded
    app.run()
    no_errors(app)
    assert not app.error, [e.value for e in app.error]
    [section] = [e for e in app.expander if e.label == "A layer's channels for one image"]
    return section


def test_model_page_draws_a_layers_channels_beside_the_input(app):
    app.run().switch_page(page_path("model")).run()
    app.selectbox(key="m_arch").set_value("simple-cnn").run()
    no_errors(app)
    assert not app.get("image")                     # folded: nothing runs, nothing is drawn
    section = open_section(app)
    assert app.selectbox(key="fm_layer_simple-cnn").value == "features.7"       # the deepest
    [seen, grid] = [image.captions[0] for image in section.get("image")]
    assert seen.startswith("Sample 0 of train (class ") and seen.endswith(", as the model sees it"), seen
    assert grid == "64 of 64 channels, strongest first, layer features.7, output 64×4×4", grid
    app.selectbox(key="fm_layer_simple-cnn").set_value("features.1").run()
    app.number_input(key="fm_sample_train").set_value(3).run()
    no_errors(app)
    [seen, grid] = app.get("image")
    assert seen.captions[0].startswith("Sample 3 of train") and grid.captions[0].startswith("16 of 16 channels")
    app.selectbox(key="m_arch").set_value("mlp").run()
    no_errors(app)
    assert not app.get("image")
    assert any("mlp has no feature layers" in i.value for i in app.info), [i.value for i in app.info]


def test_model_page_draws_a_checkpoints_feature_maps(app, finished_run):
    app.run().switch_page(page_path("model")).run()
    app.radio(key="m_src").set_value("Checkpoint of the chosen run").run()
    open_section(app)
    [seen, grid] = app.get("image")
    assert "as the model sees it" in seen.captions[0]
    assert grid.captions[0] == "64 of 64 channels, strongest first, layer features.7, output 64×2×2"   # 8x8 digits
