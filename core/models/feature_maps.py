"""Feature maps: what one layer's channels make of one image, strongest first, and their grid for drawing.

A forward hook on the layer catches its output while the model runs on one normalised image, in eval
mode under inference_mode; the hook is removed afterwards, also when the forward fails. The channels
come back ordered by their mean activation, highest first, so a grid capped at a few dozen channels
shows the ones that respond most to this image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from core.data.augment import BatchPreprocessor
from core.models.registry import model_spec

GRID_LIMIT = 64         # channels a grid shows (a ResNet-50's layer4 has 2048)
GRID_GAP = 255          # the 1-pixel gap between tiles: white, apart from a dead (all-black) channel


@dataclass
class FeatureMaps:
    layer: str                      # the module whose output this is
    output_shape: tuple[int, ...]   # (C, h, w) of that output
    channels: np.ndarray            # float32 [C, h, w], strongest first
    strength: np.ndarray            # float32 [C]: each channel's mean activation, in the same order
    index: np.ndarray               # int64 [C]: each channel's own index in the layer's output


def _layers_named(model_name: str) -> str:
    layers = model_spec(model_name).feature_layers
    return f"its feature layers, shallow to deep: {', '.join(layers)}" if layers else \
        f"{model_name} has no feature layers (no convolutions): feature maps need a convolutional model"


def _module_modes(model: torch.nn.Module) -> dict:
    # Each module's own mode, not just the model's: a frozen backbone keeps its BatchNorm in eval while
    # the rest trains, which model.train(True) would undo.
    return {module: module.training for module in model.modules()}


def feature_maps(model: torch.nn.Module, model_name: str, inputs: torch.Tensor, layer: str) -> FeatureMaps:
    """The output of module `layer` (one of the registry's feature layers, or any module of the model)
    for one normalised image, inputs [1, C, H, W] as the model reads it. Channels are ordered by their
    mean activation over the map, highest first (ties keep the layer's order). ValueError, naming the
    layer and the model's feature layers, for a model without any (mlp), a layer the model does not
    have, or one whose output is not a spatial map [1, C, h, w] (a Linear's)."""
    if not model_spec(model_name).feature_layers:
        raise ValueError(f"cannot show the feature maps of {layer!r}: {_layers_named(model_name)}")
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ValueError(f"feature maps read one image as [1, C, H, W], got shape {tuple(inputs.shape)}")
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        raise ValueError(f"{model_name} has no layer {layer!r}; {_layers_named(model_name)}") from None
    caught = []
    hook = module.register_forward_hook(lambda _module, _inputs, output: caught.append(output))
    modes = _module_modes(model)
    model.eval()
    try:
        with torch.inference_mode():
            device = next(model.parameters()).device
            model(inputs.to(device))
    finally:
        hook.remove()
        for each, training in modes.items():
            each.training = training
    output = caught[0] if caught else None     # a layer run twice: its first output
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ValueError(f"layer {layer!r} of {model_name} outputs {shape}, not a spatial map "
                         f"[1, C, h, w]; {_layers_named(model_name)}")
    maps = output[0].detach().float().cpu().numpy()
    strength = maps.mean(axis=(1, 2))
    order = np.argsort(-strength, kind="stable")
    return FeatureMaps(layer, tuple(maps.shape), np.ascontiguousarray(maps[order]), strength[order].astype(np.float32),
                       order.astype(np.int64))


def model_input(image: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    """uint8 [C, H, W] -> the normalised [1, C', H, W] the model reads (grayscale repeated for a
    3-channel network), as training and evaluation preprocess it."""
    return BatchPreprocessor(mean, std)(torch.from_numpy(np.ascontiguousarray(image))[None], train=False)


def _enlarged(image: np.ndarray, side: int) -> np.ndarray:
    """Whole-pixel enlargement until the long edge is about `side`: a 4x4 map stays sharp on screen."""
    scale = max(1, side // max(image.shape[:2]))
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def input_as_seen(inputs: torch.Tensor, mean: list[float], std: list[float], side: int = 256) -> np.ndarray:
    """The normalised [1, C, H, W] back to uint8 0..255 for drawing: [H, W] for one channel, [H, W, 3]
    for three, enlarged to about `side` pixels."""
    mean_, std_ = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))
    unit = inputs[0].detach().float().cpu() * std_ + mean_
    pixels = (unit.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return _enlarged(pixels[0] if pixels.shape[0] == 1 else pixels[:3].transpose(1, 2, 0), side)


def channel_grid(channels: np.ndarray, limit: int = GRID_LIMIT, side: int = 512) -> tuple[np.ndarray, int]:
    """(uint8 [H, W] grid, channels shown): the first `limit` channels of [C, h, w], each min-max
    normalised to 0..255 on its own (a constant channel is black), in rows of a near-square grid with
    a 1-pixel gap, each tile enlarged by whole pixels so the grid is about `side` pixels wide."""
    shown = min(len(channels), limit)
    if shown == 0:
        raise ValueError("no channels to draw")
    maps = channels[:shown].astype(np.float32)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    tiles = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1) * 255, 0).round().astype(np.uint8)
    columns = math.ceil(math.sqrt(shown))
    rows = math.ceil(shown / columns)
    height, width = maps.shape[1:]
    scale = max(1, (side // columns) // max(height, width))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    height, width = height * scale, width * scale
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), GRID_GAP, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // columns) * (height + 1), (i % columns) * (width + 1)
        grid[top:top + height, left:left + width] = tile
    return grid, shown


def grid_caption(maps: FeatureMaps, shown: int) -> str:
    """"16 of 64 channels, strongest first, layer features.7, output 64×4×4"."""
    return (f"{shown} of {maps.output_shape[0]} channels, strongest first, layer {maps.layer}, "
            f"output {'×'.join(map(str, maps.output_shape))}")
