"""The Model page's feature maps: a layer's channels for one image (a sample of the data or a file),
strongest first, beside the image as the model sees it. Drawn only while its expander is open."""
from __future__ import annotations

import numpy as np
import streamlit as st

from core.config import RunConfig
from core.data.datasets import SPLITS, DatasetError
from core.data.images import ImageRefused, decode
from core.models.registry import input_normalisation, model_spec

OPEN = "m_fm_open"          # whether the "Feature maps" expander is open
SOURCES = ("A sample of the data", "A file")


def show_sample(checkpoint: str, split: str, index: int) -> None:
    """Button callback (before the Model page's widgets exist): open its feature maps on the chosen
    run's checkpoint and this sample (the Projector's click view sends one here)."""
    st.session_state["m_src"] = "Checkpoint of the chosen run"
    st.session_state["m_ckpt"] = checkpoint
    st.session_state[OPEN] = True
    st.session_state["fm_source"] = SOURCES[0]
    st.session_state["fm_split"] = split
    st.session_state[f"fm_sample_{split}"] = index


def open_one_of(rows, arrays: dict, split_data, checkpoint: str, split: str, key: str) -> None:
    """A picker of the samples behind `rows` (of an evaluation's arrays) and a button that opens the
    picked one's feature maps on the Model page (a confusion cell's samples, on the Evaluate page)."""
    from core.analysis.evaluate import sample_name
    from pages.common import site
    positions = [int(arrays["index"][row]) for row in rows]
    cols = st.columns([3, 2])
    position = cols[0].selectbox("A sample's feature maps", positions, key=key,
                                 format_func=lambda p: sample_name(split_data, p), label_visibility="collapsed")
    if cols[1].button("Its feature maps", key=f"{key}_go", on_click=show_sample, args=(checkpoint, split, position),
                      help="this sample's feature maps on the Model page, for the chosen run's checkpoint"):
        st.switch_page(site.page_path("model"))


@st.cache_resource(show_spinner="Loading the data…", max_entries=2)
def dataset(config_json: str):
    from core.data.datasets import load_dataset
    return load_dataset(RunConfig.from_json(config_json))


@st.cache_data(show_spinner="Running the model…", max_entries=16)
def drawn_maps(made_of: tuple, name: str, layer: str, image: np.ndarray, mean: tuple, std: tuple, _model):
    """(input as the model sees it, grid, caption) for `_model`, the network `made_of` names."""
    from core.models.feature_maps import channel_grid, feature_maps, grid_caption, input_as_seen, model_input
    inputs = model_input(image, list(mean), list(std))
    maps = feature_maps(_model, name, inputs, layer)
    grid, shown = channel_grid(maps.channels)
    return input_as_seen(inputs, list(mean), list(std)), grid, grid_caption(maps, shown)


def feature_maps_section(model, name: str, made_of: tuple, shape: tuple, data_config: RunConfig,
                         normalisation: tuple | None = None) -> None:
    """`model`, a `name` reading data of `shape` (C, H, W) from `data_config`'s dataset, normalised with
    `normalisation` (mean, std): a checkpoint's own, or None for the data's (a fresh model)."""
    layers = model_spec(name).feature_layers
    if not layers:
        st.info(f"Feature maps: {name} has no feature layers (no convolutions); they need a convolutional model.")
        return
    box = st.expander("A layer's channels for one image", key=OPEN, on_change="rerun")
    if not box.open:
        return
    with box:
        cols = st.columns([2, 3, 1, 1])
        layer = cols[0].selectbox("Layer", layers, index=len(layers) - 1, key=f"fm_layer_{name}",
                                  help="The model's feature layers, shallow to deep; the deepest is the default.")
        source = cols[1].radio("Image", SOURCES, horizontal=True, key="fm_source")
        data = None
        if source == SOURCES[0] or normalisation is None:       # a fresh model is normalised by its data
            try:
                data = dataset(data_config.to_json())
            except (DatasetError, ValueError, OSError) as error:
                st.error(f"Cannot load the data ({data_config.dataset}): {error}")
                return
        mean, std = normalisation or input_normalisation(name, False, data.mean, data.std)
        if source == SOURCES[0]:
            split = cols[2].selectbox("Split", [s for s in SPLITS if len(data.splits[s])], key="fm_split")
            samples = data.splits[split]
            st.session_state.setdefault(f"fm_sample_{split}", 0)      # a link may have set it (show_sample)
            index = cols[3].number_input("Sample", 0, len(samples) - 1, key=f"fm_sample_{split}")
            image = samples.sample(index).cpu().numpy()
            label = f"Sample {index} of {split} (class {data.classes[int(samples.labels[index])]})"
        else:
            upload = st.file_uploader("An image (any kind)", key="fm_file")
            if upload is None:
                st.caption(f"Drop an image: it is read at {shape[1]}×{shape[2]}, {shape[0]} channel(s), as "
                           "the model reads its data.")
                return
            try:
                image = decode(upload.getvalue(), shape[1], shape[0])
            except ImageRefused as error:
                st.error(f"{upload.name}: {error}")
                return
            label = upload.name
        try:
            seen, grid, caption = drawn_maps(made_of, name, layer, image, tuple(mean), tuple(std), model)
        except (ValueError, RuntimeError) as error:
            st.error(f"Cannot show the feature maps of {layer}: {error}")
            return
        left, right = st.columns([1, 2])
        left.image(seen, caption=f"{label}, as the model sees it")
        right.image(grid, caption=caption)
