"""Batch preprocessing on the device: uint8 -> normalised float, plus per-sample augmentation.

One affine grid per sample covers random crop (translation), horizontal flip and rotation in a
single grid_sample call, so augmentation costs one kernel per batch instead of a Python loop per image.
Crop shifts are whole pixels, so without rotation the samples land on pixel centres and the image is
moved, not blurred (as torchvision's RandomCrop with padding).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.config import RunConfig


class BatchPreprocessor:
    def __init__(self, mean: list[float], std: list[float], config: RunConfig | None = None,
                 device: torch.device | str = "cpu", channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.config = config
        self.channels_last = channels_last     # what a conv net on a GPU runs fastest on

    @property
    def augments(self) -> bool:
        c = self.config
        return bool(c and (c.aug_random_crop or c.aug_flip or c.aug_rotation > 0 or c.aug_color_jitter > 0))

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(torch.float32, copy=True).div_(255)      # never the caller's tensor in place

    def normalise(self, unit: torch.Tensor) -> torch.Tensor:
        """One mean/std per channel the network reads: grayscale data feeding a 3-channel (ImageNet)
        network is repeated to 3 channels here, so it stays 1 channel in memory."""
        if unit.shape[1] == 1 and self.mean.shape[1] > 1:
            unit = unit.expand(-1, self.mean.shape[1], -1, -1)
        return (unit - self.mean) / self.std

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        unit = self.to_unit(images)
        if train and self.augments:
            unit = self.augment(unit)
        inputs = self.normalise(unit)
        return inputs.contiguous(memory_format=torch.channels_last) if self.channels_last else inputs

    def augment(self, unit: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crop / flip / rotation / colour jitter, drawn per sample; input and output in 0..1."""
        c = self.config
        n, device = unit.shape[0], unit.device

        def uniform(low, high):
            return torch.rand(n, device=device, generator=generator) * (high - low) + low

        if c.aug_random_crop or c.aug_flip or c.aug_rotation > 0:
            angle = uniform(-c.aug_rotation, c.aug_rotation) * (math.pi / 180) if c.aug_rotation > 0 \
                else torch.zeros(n, device=device)
            flip = torch.where(uniform(0, 1) < 0.5, -1.0, 1.0) if c.aug_flip else torch.ones(n, device=device)
            # A random crop of the image padded by p pixels is a shift of -p..p whole pixels; one
            # pixel is 2/side in grid_sample's normalised coordinates [-1, 1].
            height, width = unit.shape[-2:]
            pad = (c.crop_padding or max(1, round(min(height, width) / 8))) if c.aug_random_crop else 0
            tx, ty = ((torch.randint(-pad, pad + 1, (n,), device=device, generator=generator) * (2 / side))
                      for side in (width, height))
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                                 torch.stack([sin * flip, cos, ty], 1)], 1)
            grid = F.affine_grid(theta, list(unit.shape), align_corners=False)
            unit = F.grid_sample(unit, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if c.aug_color_jitter > 0:
            s = c.aug_color_jitter
            brightness = uniform(1 - s, 1 + s).view(n, 1, 1, 1)
            contrast = uniform(1 - s, 1 + s).view(n, 1, 1, 1)
            mean = unit.mean(dim=(1, 2, 3), keepdim=True)
            unit = ((unit - mean) * contrast + mean) * brightness
        return unit.clamp_(0, 1)


def predict_logits(model, inputs: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """The model's logits; with `flip` (test-time augmentation) the mean of the logits of each image
    and its mirror image."""
    logits = model(inputs)
    return (logits + model(inputs.flip(-1))) / 2 if flip else logits
