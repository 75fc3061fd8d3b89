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


def explanation_source(explainer, classes: list[str]) -> Source | None:
    """The class picker beside the toggle; None (said once) for a model Grad-CAM cannot read."""
    from core.models.gradcam import CannotExplain
    try:
        explainer.layer()
    except CannotExplain as error:
        st.info(str(error))
        return None
    choice = st.columns([2, 5])[0].selectbox("Explain", [PREDICTED, *classes], key="gc_class",
                                             help="the class whose evidence the heat map shows")
    return Source(explainer, None if choice == PREDICTED else classes.index(choice))


def draw(box, source: Source, data: bytes) -> None:
    """The image's heat map in `box`, captioned with the class it explains and the layer it reads."""
    from core.data.images import ImageRefused
    from core.models.gradcam import CannotExplain
    try:
        pixels = source.explainer.pixels(data)
        explanation = source.explainer.explain(pixels, source.target)
    except (ImageRefused, CannotExplain) as error:
        box.caption(f"No Grad-CAM: {error}")
        return
    name = source.explainer.classes[explanation.target]
    box.image(source.explainer.overlay(pixels, explanation), width=140,
              caption=f"where it looks for {name} ({explanation.probs[explanation.target]:.0%}), {explanation.layer}")
