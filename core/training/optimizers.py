"""The optimizer and learning-rate schedule of a run's settings, for the trainer and the LR finder alike:
its parameter groups (a pretrained backbone at its own share of the lr), the lr scaled for
batch_size auto, and the schedules."""
from __future__ import annotations

import math

import torch

from core.config import RunConfig
from core.models.registry import parameter_groups


def optimizer_groups(model: torch.nn.Module, config: RunConfig, pretrained: bool):
    """A pretrained backbone learns at lr x backbone_lr_factor. The head's group comes first, so the lr
    logged (group 0's) is the one the form asked for."""
    if not pretrained:
        return model.parameters()
    groups = parameter_groups(model, config.model)
    return [{"params": groups["head"]},
            {"params": groups["backbone"], "lr": config.lr * config.backbone_lr_factor}]


def make_optimizer(config: RunConfig, params, fused: bool = False) -> torch.optim.Optimizer:
    """fused: one kernel for all parameters' updates (CUDA)."""
    extra = {"fused": True} if fused else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0, **extra)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def set_lr(optimizer: torch.optim.Optimizer, lr: float, current: float) -> None:
    """Move the lr from `current` to `lr`; every group keeps its share (a pretrained backbone its factor)."""
    for group in optimizer.param_groups:
        group["lr"] *= lr / current


def scaled_lr(config: RunConfig, effective_batch: int) -> float:
    """The lr for batch_size auto: lr is meant for lr_reference_batch samples per step; sgd scales it
    linearly with the batch (Goyal et al., 2017), adam and adamw with its square root."""
    ratio = effective_batch / config.lr_reference_batch
    return config.lr * (ratio if config.optimizer == "sgd" else math.sqrt(ratio))


def onecycle_warmup(fraction: float, total_steps: int) -> float:
    """OneCycleLR's pct_start for a warm-up of about `fraction` of the steps, in whole steps (at least
    one, leaving one to decay): torch divides by zero when the warm-up ends on step 0, as 25% of 4
    steps does."""
    if total_steps < 2:
        return fraction
    steps = min(max(round(fraction * total_steps), 1), total_steps - 1)
    return (steps if steps >= 2 else 1.5) / total_steps


def make_scheduler(config: RunConfig, optimizer, steps_per_epoch: int):
    """(scheduler, steps_per_batch): onecycle steps every batch, the others every epoch."""
    s = torch.optim.lr_scheduler
    if config.scheduler == "step":
        return s.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.scheduler == "cosine":
        return s.CosineAnnealingLR(optimizer, T_max=config.epochs), False
    if config.scheduler == "onecycle":
        return s.OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                            epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                            pct_start=onecycle_warmup(config.warmup_fraction, config.epochs * steps_per_epoch)), True
    if config.scheduler == "plateau":
        return s.ReduceLROnPlateau(optimizer, factor=config.gamma, patience=2), False
    return None, False
