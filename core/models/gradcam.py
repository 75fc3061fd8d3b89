"""Grad-CAM (Selvaraju et al., 2017): where in an image a model looks for a class, with Captum's
LayerGradCam on the registry's deepest feature layer (its last convolutions) or any layer picked,
upsampled to the input with LayerAttribution.interpolate.

The known traps are handled here, once: the model runs in eval mode (dropout off, BatchNorm's running
statistics); gradients are on even when the caller is in torch.no_grad or inference_mode (where none
would be recorded); and in-place activations (the ResNets' ReLU(inplace=True)) are made out-of-place
while it runs, since an in-place op overwrites the layer output whose gradient Grad-CAM reads.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from core.models.registry import model_spec


class CannotExplain(ValueError):
    """A model or layer Grad-CAM cannot read (a network without convolutions, an unknown layer)."""


@dataclass
class Explanation:
    heatmap: np.ndarray      # float32 [H, W] at the input's size, 0..1 (0 everywhere: no positive evidence)
    target: int              # the class explained
    probs: np.ndarray        # the model's class probabilities for the image
    layer: str               # the layer whose activations and gradients made the map


def explained_layer(model_name: str, layer: str | None = None) -> str:
    """The layer Grad-CAM reads: `layer`, or the registry's deepest feature layer; CannotExplain for a
    model that has none (mlp)."""
    spec = model_spec(model_name)
    if layer is None:
        if not spec.feature_layers:
            raise CannotExplain(f"{model_name} has no convolutional layer: Grad-CAM needs one (its maps are made "
                                "from a layer's spatial activations), so there is no map for it")
        return spec.feature_layers[-1]
    return layer


@contextlib.contextmanager
def _out_of_place(model: torch.nn.Module):
    switched = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for module in switched:
        module.inplace = False
    try:
        yield
    finally:
        for module in switched:
            module.inplace = True


def grad_cam(model: torch.nn.Module, model_name: str, inputs: torch.Tensor, target: int | None = None,
             layer: str | None = None) -> Explanation:
    """The Grad-CAM of one normalised image (inputs [1, C, H, W], as the model reads it) for class
    `target` (None: the predicted class) at `layer` (None: the deepest feature layer)."""
    from captum.attr import LayerAttribution, LayerGradCam
    name = explained_layer(model_name, layer)
    try:
        module = model.get_submodule(name)
    except AttributeError:
        layers = ", ".join(model_spec(model_name).feature_layers) or "none"
        raise CannotExplain(f"{model_name} has no layer {name!r} (its feature layers: {layers})") from None
    modes = {module: module.training for module in model.modules()}    # a frozen backbone's BatchNorm
    model.eval()                                                         # stays as it was, not train()
    try:
        with torch.inference_mode(False), torch.enable_grad(), _out_of_place(model):
            inputs = inputs.detach().clone()
            with torch.no_grad():
                probs = torch.softmax(model(inputs).float(), 1)[0]
            chosen = int(probs.argmax()) if target is None else int(target)
            if not 0 <= chosen < probs.numel():
                raise CannotExplain(f"class {chosen} does not exist: the model has {probs.numel()} classes")
            attribution = LayerGradCam(model, module).attribute(inputs, target=chosen, relu_attributions=True)
            if attribution.dim() != 4:
                raise CannotExplain(f"layer {name!r} of {model_name} gives no spatial map (output shape "
                                    f"{tuple(attribution.shape)}): pick a convolutional layer")
            upsampled = LayerAttribution.interpolate(attribution, tuple(inputs.shape[-2:]),
                                                     interpolate_mode="bilinear")
    finally:
        for module, training in modes.items():
            module.training = training
    heat = upsampled[0].sum(0).detach().float().cpu().numpy()
    heat = np.clip(heat, 0, None)
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else heat
    return Explanation(heat.astype(np.float32), chosen, probs.detach().cpu().numpy(), name)


def overlay(image: np.ndarray, heatmap: np.ndarray, side: int = 256, alpha: float = 0.45) -> np.ndarray:
    """The heat map over the image as uint8 RGB [side', side'] (at least `side` on the long edge, so
    a 16-pixel digit can be seen): image uint8 [C, H, W] as the model sees it, heatmap 0..1 [H, W]."""
    from matplotlib import colormaps
    from PIL import Image
    pixels = image[0] if image.shape[0] == 1 else image[:3].transpose(1, 2, 0)
    rgb = np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels
    colours = (colormaps["jet"](heatmap)[..., :3] * 255).astype(np.float32)
    blended = ((1 - alpha) * rgb.astype(np.float32) + alpha * colours).clip(0, 255).astype(np.uint8)
    height, width = blended.shape[:2]
    scale = max(1, side // max(height, width))
    return np.asarray(Image.fromarray(blended).resize((width * scale, height * scale), Image.NEAREST))


def mass_in(heatmap: np.ndarray, rows: slice, columns: slice) -> float:
    """The share of the map's total inside a region (how a test tells where it points)."""
    total = float(heatmap.sum())
    return float(heatmap[rows, columns].sum()) / total if total > 0 else 0.0
