"""Where a run's model looks, for image files: Grad-CAM (core.models.gradcam) of its best.pt with the
run's own preprocessing, for the Predict page and `python -m core predict --explain DIR`. Always
the torch model, whatever backend predicts: ONNX Runtime has no gradients."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.data.augment import BatchPreprocessor
from core.data.images import decode
from core.models.gradcam import Explanation, explained_layer, grad_cam, overlay
from core.models.registry import model_spec
from core.runs.checkpoint import load_model


class Explainer:
    def __init__(self, checkpoint_path: Path):
        self.model, checkpoint = load_model(checkpoint_path)
        self.model_name = checkpoint["config"]["model"]
        self.classes = list(checkpoint["classes"])
        self.channels, self.size, _ = checkpoint["input_shape"]
        self.prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"])

    def layer(self) -> str:
        """The layer the maps come from; CannotExplain (with the reason) for a model without one."""
        return explained_layer(self.model_name)

    def pixels(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 [C, H, W] as the model sees them (ImageRefused for a bad file)."""
        return decode(data, self.size, self.channels)

    def layers(self) -> tuple[str, ...]:
        """The layers a map can come from, shallow to deep (the registry's feature layers)."""
        return model_spec(self.model_name).feature_layers

    def explain(self, pixels: np.ndarray, target: int | None = None, layer: str | None = None) -> Explanation:
        """Grad-CAM of the image for class `target` (None: the one predicted) at `layer` (None: the deepest)."""
        inputs = self.prep(torch.from_numpy(pixels)[None], train=False)
        return grad_cam(self.model, self.model_name, inputs, target, layer)

    def overlay(self, pixels: np.ndarray, explanation: Explanation) -> np.ndarray:
        return overlay(pixels, explanation.heatmap)


def save_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(image).save(path, format="PNG")
