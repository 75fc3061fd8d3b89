"""Model: architecture, torchinfo summary, parameter counts, and weight distributions."""
import pandas as pd
import streamlit as st

from core.analysis import plots
from core.config import SETTINGS, read_config_values
from core.data.datasets import DatasetError, class_count
from core.models.registry import MODEL_SPECS, model_input_shape, set_backbone_frozen
from core.runs.layout import CHECKPOINTS
from pages.common import forms, selection, shared
from pages.common.feature_view import feature_maps_section

st.title("Model")

cols = st.columns([2, 2, 1])
source = cols[0].radio("Weights", ("Fresh model", "Checkpoint of the chosen run"), horizontal=True, key="m_src")


def network_input(name: str, data_shape: tuple) -> str:
    """What the network reads, e.g. "Input 3 x 224 x 224 (grayscale repeated to 3 channels)": an ImageNet
    network reads 3 channels whatever the data has."""
    taken = model_input_shape(name, *data_shape)
    repeated = f" (grayscale repeated to {taken[0]} channels)" if data_shape[0] == 1 and taken[0] > 1 else ""
    return f"Input {' x '.join(map(str, taken))}{repeated}"


@st.cache_resource(show_spinner="Building the model…", max_entries=8)
def fresh(name: str, shape: tuple, classes: int, frozen: bool):
    from core.models.inspection import fresh_model
    model = fresh_model(name, shape, classes)
    set_backbone_frozen(model, name, frozen)
    return model


@st.cache_resource(show_spinner="Loading the checkpoint…", max_entries=4)
def from_checkpoint(path: str, mtime: float):
    from core.runs.checkpoint import load_model
    model, checkpoint = load_model(path)
    config = checkpoint["config"]
    # As the run left it: a backbone frozen throughout shows as frozen.
    set_backbone_frozen(model, config["model"], bool(config.get("freeze_backbone")))
    return (model, config["model"], tuple(checkpoint["input_shape"]), len(checkpoint["classes"]),
            checkpoint["loop"], config, (tuple(checkpoint["mean"]), tuple(checkpoint["std"])))


DEEPEST = 5     # the depth slider's top: the table is made once at it, a shallower one is its top rows


@st.cache_data(show_spinner="Summarising the layers…", max_entries=4)
def layers(name: str, shape: tuple, classes: int, _model) -> list[dict]:
    """The layer table of `_model`, a `name` built for data of `shape` with `classes` classes: those
    three make the network, so the table is made once for them, whatever the weights, the frozen
    layers or the other widgets (torchinfo runs the network: seconds for a ResNet-50 at 224)."""
    from core.models.inspection import layer_table
    return layer_table(_model, model_input_shape(name, *shape), DEEPEST)


@st.cache_data(show_spinner=False, max_entries=4)
def weights_table(made_of: tuple, _model) -> list[dict]:
    """Per-tensor weight statistics of `_model`, made once per `made_of` (what built it: a fresh
    network's name, shape, classes and freezing, or a checkpoint's path and mtime), not per rerun."""
    from core.models.inspection import weight_stats
    return weight_stats(_model.state_dict())


if source == "Fresh model":
    model_setting = SETTINGS["model"]
    shared_choice = selection.chosen_model()      # the model picked on the Train page (or in a link)
    if shared_choice and st.session_state.get("m_arch_shown") != shared_choice:
        st.session_state["m_arch"] = shared_choice
    name = cols[1].selectbox("Architecture", model_setting.choices, index=model_setting.choices.index(
        model_setting.default), key="m_arch", help=model_setting.help)
    if name != shared_choice:
        selection.choose_model(name)              # and the one picked here is the Train page's
    st.session_state["m_arch_shown"] = name
    with st.sidebar.expander("Input data", expanded=False):
        data_config = forms.dataset_picker(model=name)      # an ImageNet network proposes its 224
    shape = (data_config.channels, data_config.image_size, data_config.image_size)
    frozen, normalisation = False, None       # a fresh model reads its data normalised by the data's own
    if MODEL_SPECS[name].pretrainable:
        freeze = SETTINGS["freeze_backbone"]
        frozen = cols[2].checkbox(freeze.label, key="m_freeze", help=freeze.help)
    try:
        classes = class_count(data_config)
    except DatasetError as error:
        st.error(f"{error} (choose the data under 'Input data' in the sidebar)")
        st.stop()
    try:
        model = fresh(name, shape, classes, frozen)
        made_of = ("fresh", name, shape, classes, frozen)
    except ValueError as error:
        st.error(str(error))
        st.stop()
    weights = ("randomly initialised (a run with pretrained=true starts from ImageNet's weights, "
               "all but the head)") if MODEL_SPECS[name].pretrainable else "freshly initialised (Kaiming)"
    st.caption(f"{network_input(name, shape)} from {data_config.dataset}, {classes} classes, {weights}.")
else:
    run_id = shared.selected_run()
    if run_id is None:
        st.info("No run chosen: pick one in the sidebar, or look at a fresh model.")
        st.stop()
    which = cols[1].radio("Checkpoint", CHECKPOINTS, horizontal=True, key="m_ckpt")
    path = shared.store().checkpoint_path(run_id, which)
    if not path.exists():
        st.info(f"Run {run_id} has no {which}.pt yet (it is written at the end of each epoch).")
        st.stop()
    try:
        made_of = ("checkpoint", str(path), path.stat().st_mtime)
        model, name, shape, classes, loop, config, normalisation = from_checkpoint(*made_of[1:])
        data_config = read_config_values(config)[0]
    except (ValueError, KeyError, RuntimeError) as error:
        st.error(f"Cannot read {which}.pt: {error}")
        st.stop()
    st.caption(f"{name} from {which}.pt of {run_id}: epoch {loop['epoch']}, step {loop['step']}; "
               f"{network_input(name, shape).lower()}.")

from core.models.inspection import model_size, weight_histogram  # noqa: E402

size = model_size(model)
cols = st.columns(4)
cols[0].metric("Parameters", f"{size['total']:,}")
cols[1].metric("Trainable", f"{size['trainable']:,}")
cols[2].metric("Frozen", f"{size['total'] - size['trainable']:,}")
cols[3].metric("Size", f"{size['size_mb']:.2f} MB")

st.subheader("Layers (torchinfo)")
depth = st.slider("Depth", 1, DEEPEST, 2, key="m_depth")
rows = [row for row in layers(name, shape, classes, model) if row["depth"] <= depth]
st.dataframe(pd.DataFrame(rows), hide_index=True,
             column_config={"params": st.column_config.NumberColumn(format="localized"),
                            "mult-adds": st.column_config.NumberColumn(format="localized")})
if any(row["layer"].endswith(", reused") for row in rows):
    st.caption("A layer run more than once has a row per run; a reused one's parameters are counted at "
               "its first row, its mult-adds at each.")

st.subheader("Weights")
state = model.state_dict()
stats = pd.DataFrame(weights_table(made_of, model))
st.dataframe(stats, hide_index=True, column_config={c: st.column_config.NumberColumn(format="%.4f")
                                                    for c in ("mean", "std", "min", "max", "near zero %")})
weight_layers = [row for row in stats["layer"] if row.endswith("weight")] or list(stats["layer"])
chosen = st.multiselect("Histograms of", weight_layers, default=weight_layers[:4], key="m_hist")
hist_cols = st.columns(2)
for i, layer in enumerate(chosen):
    edges, counts = weight_histogram(state[layer])
    hist_cols[i % 2].plotly_chart(plots.histogram_bars(edges, counts, layer), key=f"hist_{layer}")

st.subheader("Feature maps")
feature_maps_section(model, name, made_of, shape, data_config, normalisation)
