"""The Model page's layer table (core.models.inspection.layer_table): a container's row counts what runs
inside it, the root's mult-adds are torchinfo's total, a reused layer's parameters count once; the page
makes it once per network; and the page's caption says what the network reads."""
import pytest
from torch import nn
from torchinfo import summary

from conftest import no_errors
from core.models.inspection import fresh_model, layer_table, weight_stats
from core.models.registry import parameter_counts
from pages.common.site import page_path

SMALL = (3, 32, 32)      # small enough to be fast; the imagenet-* models accept 32
ALL_DEPTHS = 10


def direct_children(rows, index):
    below = []
    for row in rows[index + 1:]:
        if row["depth"] <= rows[index]["depth"]:
            break
        if row["depth"] == rows[index]["depth"] + 1:
            below.append(row)
    return below


@pytest.mark.parametrize("name", ["resnet18", "imagenet-resnet18"])
def test_root_row_is_torchinfos_total(name):
    model = fresh_model(name, SMALL, 10)
    stats = summary(model, input_size=(1, *SMALL), verbose=0, device="cpu")
    [root, *_] = layer_table(model, SMALL, depth=2)
    assert root["mult-adds"] == stats.total_mult_adds
    assert root["params"] == stats.total_params == parameter_counts(model)["total"]


@pytest.mark.parametrize("name", ["resnet18", "imagenet-resnet18", "imagenet-convnext_tiny"])
def test_container_row_is_the_sum_of_its_children(name):
    # ConvNeXt's blocks hold a parameter of their own (layer_scale) beside their children's.
    model = fresh_model(name, SMALL, 10)
    rows = layer_table(model, SMALL, depth=ALL_DEPTHS)
    stats = summary(model, input_size=(1, *SMALL), depth=ALL_DEPTHS, verbose=0, device="cpu")
    assert len(rows) == len(stats.summary_list)
    containers = 0
    for index, (row, layer) in enumerate(zip(rows, stats.summary_list)):
        children = direct_children(rows, index)
        if not children:
            continue
        containers += 1
        own_params = sum(p.numel() for p in layer.module.parameters(recurse=False))
        assert row["mult-adds"] == sum(child["mult-adds"] for child in children), row["layer"]
        assert row["params"] == sum(child["params"] for child in children) + own_params, row["layer"]
    assert containers > 10


def test_a_shallower_table_keeps_each_rows_numbers():
    model = fresh_model("imagenet-resnet18", SMALL, 10)
    full = [row for row in layer_table(model, SMALL, depth=ALL_DEPTHS) if row["depth"] <= 2]
    assert layer_table(model, SMALL, depth=2) == full
    block = next(row for row in full if row["layer"].strip() == "BasicBlock (0)")
    conv = next(row for row in layer_table(model, SMALL, depth=3) if row["layer"].strip() == "Conv2d (conv1)"
                and row["depth"] == 3)
    assert block["mult-adds"] > 2 * conv["mult-adds"] > 0     # a block holds two such convs


def test_simple_cnn_table():
    # The layers' own rows are as before the fix; the containers' are now their layers' sums
    # (they were 1,490,944, 3,005,540 and 3,238,500).
    model = fresh_model("simple-cnn", (1, 28, 28), 10)
    got = [(row["layer"].strip(), row["params"], row["mult-adds"]) for row in layer_table(model, (1, 28, 28), 5)]
    assert got == [
        ("SimpleCNN", 323850, 2241738),
        ("Sequential (features)", 23296, 1941184),
        ("Conv2d (0)", 160, 125440), ("ReLU (1)", 0, 0), ("MaxPool2d (2)", 0, 0),
        ("Conv2d (3)", 4640, 909440), ("ReLU (4)", 0, 0), ("MaxPool2d (5)", 0, 0),
        ("Conv2d (6)", 18496, 906304), ("ReLU (7)", 0, 0), ("MaxPool2d (8)", 0, 0),
        ("Sequential (classifier)", 300554, 300554),
        ("Flatten (0)", 0, 0), ("Linear (1)", 295424, 295424), ("ReLU (2)", 0, 0), ("Dropout (3)", 0, 0),
        ("Linear (4)", 5130, 5130),
    ]


def test_model_page_caption_says_what_an_imagenet_network_reads(app):
    app.run().switch_page(page_path("model")).run()
    app.selectbox(key="m_arch").set_value("imagenet-resnet18").run()
    no_errors(app)
    captions = [c.value for c in app.caption]
    assert any(c.startswith("Input 3 x 224 x 224 (grayscale repeated to 3 channels) from digits")
               for c in captions), captions
    app.selectbox(key="m_arch").set_value("simple-cnn").run()
    no_errors(app)
    captions = [c.value for c in app.caption]
    [caption] = [c for c in captions if c.startswith("Input ")]
    assert caption.startswith("Input 1 x ") and "repeated" not in caption, caption     # as the data is


class ReusesLayers(nn.Module):
    """Runs `shared` twice and `block` twice, as a ResNet block runs its ReLU twice."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(8, 8)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.shared(self.block(self.block(self.shared(x)))))


def test_a_reused_layers_parameters_are_counted_once():
    model = ReusesLayers()
    total = sum(p.numel() for p in model.parameters())
    rows = layer_table(model, (8,), depth=ALL_DEPTHS)
    assert rows[0]["params"] == total
    assert sum(row["params"] for row in rows if row["depth"] == 1) == total
    for index, row in enumerate(rows):
        if children := direct_children(rows, index):
            assert row["params"] == sum(child["params"] for child in children), row["layer"]
    reused = [row["layer"].strip() for row in rows if row["layer"].endswith(", reused")]
    assert reused == ["Sequential (block), reused", "Linear (0), reused", "ReLU (1), reused",
                      "Linear (shared), reused"]
    # Each run's mult-adds count: 4 runs of an 8-to-8 Linear (72 with torchinfo's bias) and the head's 18.
    assert rows[0]["mult-adds"] == 4 * 72 + 18 == summary(model, input_size=(1, 8), verbose=0).total_mult_adds


def test_model_page_makes_the_layer_table_once_per_network(app, monkeypatch):
    import core.models.inspection
    calls = []

    def counted(model, input_shape, depth=3):
        calls.append(input_shape)
        return layer_table(model, input_shape, depth)
    monkeypatch.setattr(core.models.inspection, "layer_table", counted)
    app.run().switch_page(page_path("model")).run()
    app.selectbox(key="m_arch").set_value("simple-cnn").run()
    app.run()
    app.slider(key="m_depth").set_value(4).run()        # a shallower or deeper table: the same one
    no_errors(app)
    assert len(calls) == 1, calls
    app.number_input(key="ds_size_digits").set_value(20).run()
    no_errors(app)
    assert calls == [(1, 16, 16), (1, 20, 20)]
    app.selectbox(key="m_arch").set_value("mlp").run()
    app.selectbox(key="m_arch").set_value("simple-cnn").run()
    no_errors(app)
    assert len(calls) == 3, calls


def test_model_page_makes_the_weight_statistics_once_per_model(app, monkeypatch):
    import core.models.inspection
    calls = []

    def counted(state_dict):
        calls.append(weight_stats(state_dict))
        return calls[-1]
    monkeypatch.setattr(core.models.inspection, "weight_stats", counted)
    app.run().switch_page(page_path("model")).run()
    app.selectbox(key="m_arch").set_value("simple-cnn").run()
    app.run()
    app.slider(key="m_depth").set_value(4).run()
    no_errors(app)
    assert len(calls) == 1, calls
    assert list(app.dataframe[1].value["layer"]) == [row["layer"] for row in calls[0]]    # the table shown
    app.selectbox(key="m_arch").set_value("mlp").run()
    no_errors(app)
    assert len(calls) == 2, calls
