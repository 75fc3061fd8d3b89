"""Grad-CAM on the pages: which class to explain (the predicted one, or one picked), and the heat map
over an image beside its prediction (core.serving.explain computes it)."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

PREDICTED = "the predicted class"


@dataclass
class Source:
    explainer: object          # core.serving.explain.Explainer
    target: int | None         # None: each image's predicted class
    layer: str | None = None   # None: the deepest feature layer


def explanation_source(explainer, classes: list[str]) -> Source | None:
    """The class picker beside the toggle; None (said once) for a model Grad-CAM cannot read."""
    from core.models.gradcam import CannotExplain
    try:
        explainer.layer()
    except CannotExplain as error:
        st.info(str(error))
        return None
    cols = st.columns([2, 2, 3])
    choice = cols[0].selectbox("Explain", [PREDICTED, *classes], key="gc_class",
                               help="the class whose evidence the heat map shows")
    layers = explainer.layers()
    layer = cols[1].selectbox("From layer", layers, index=len(layers) - 1, key="gc_layer",
                              help="the deepest sees whole parts of the object; shallower layers, finer detail")
    return Source(explainer, None if choice == PREDICTED else classes.index(choice), layer)


def draw(box, source: Source, data: bytes) -> None:
    """The image's heat map in `box`, captioned with the class it explains and the layer it reads."""
    from core.data.images import ImageRefused
    from core.models.gradcam import CannotExplain
    try:
        pixels = source.explainer.pixels(data)
        explanation = source.explainer.explain(pixels, source.target, source.layer)
    except (ImageRefused, CannotExplain) as error:
        box.caption(f"No Grad-CAM: {error}")
        return
    name = source.explainer.classes[explanation.target]
    box.image(source.explainer.overlay(pixels, explanation), width=140,
              caption=f"where it looks for {name} ({explanation.probs[explanation.target]:.0%}), {explanation.layer}")


@st.cache_resource(show_spinner="Loading the model for Grad-CAM…", max_entries=2)
def checkpoint_explainer(path: str, mtime: float):
    from core.serving.explain import Explainer
    return Explainer(path)


def tile_pictures(checkpoint_path, split):
    """picture(position, predicted) for prediction tiles: the sample with its Grad-CAM for the class it
    was predicted as; the plain sample (and one note) for a model without convolutions."""
    import numpy as np

    from core.models.gradcam import CannotExplain
    explainer = checkpoint_explainer(str(checkpoint_path), checkpoint_path.stat().st_mtime)
    try:
        explainer.layer()
    except CannotExplain as error:
        st.info(str(error))
        return None

    def picture(position: int, predicted: int):
        pixels = np.asarray(split.sample(position))
        return explainer.overlay(pixels, explainer.explain(pixels, predicted))
    return picture
