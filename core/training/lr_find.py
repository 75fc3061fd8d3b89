"""The learning-rate range test (Leslie Smith, 2015; fastai's lr_find): train a fresh copy of the
model for a few dozen steps while the learning rate grows exponentially, and read off where the
loss falls fastest. Uses the Trainer's own train_step, so the optimizer, augmentation and loss are
exactly those of the run the user is about to launch.
"""
from __future__ import annotations

import math
import sys
from typing import Callable

import torch

from core.config import RunConfig
from core.data.datasets import load_dataset
from core.training.optimizers import set_lr
from core.training.trainer import Trainer, epoch_order

MIN_LR, MAX_LR = 1e-7, 10.0
STEPS = 100
SMOOTHING = 0.9          # exponential moving average of the loss, debiased (as fastai does)
DIVERGED_RATIO = 4.0     # stop once the smoothed loss is this many times its minimum


def lr_at(step: int, steps: int, min_lr: float, max_lr: float) -> float:
    return min_lr * (max_lr / min_lr) ** (step / max(steps - 1, 1))


def suggest(lrs: list[float], losses: list[float]) -> float:
    """A tenth of the learning rate at the smoothed loss's minimum (fastai's "lr_min"): past the
    minimum the loss is already climbing, and the steepest-slope point is easily fooled by the first
    steps, where the loss falls whatever the learning rate."""
    return lrs[min(range(len(losses)), key=losses.__getitem__)] / 10


def find_lr(config: RunConfig, min_lr: float = MIN_LR, max_lr: float = MAX_LR, steps: int = STEPS,
            on_step: Callable[[int, int], None] | None = None) -> dict:
    """{"suggested_lr", "min_loss_lr", "curve": [{"lr", "loss"}], "steps", "stopped_early"} for the
    config's dataset and model. The config must be valid (the caller checks, as for a launch)."""
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    trainer = Trainer(config, dataset, callbacks=[])     # a fresh model: nothing of a run is touched
    trainer.model.train()
    trainer.emit("on_train_epoch_start")     # as the run's first epoch trains: a frozen backbone stays frozen
    split, device = trainer.train_split, trainer.device
    lrs, losses, average, best = [], [], 0.0, math.inf
    epoch, batches = 0, iter(())
    for step in range(steps):
        try:
            images, labels = next(batches)
        except StopIteration:      # a small dataset: go round again in the next epoch's order
            batches = iter(split.batches(epoch_order(len(split), config.seed, epoch), trainer.batch_size))
            epoch += 1
            images, labels = next(batches)
        lr = lr_at(step, steps, min_lr, max_lr)
        set_lr(trainer.optimizer, lr, trainer.lr)    # each group keeps its share (a backbone its factor)
        loss, _ = trainer.train_step((images.to(device), labels.to(device)))
        value = loss.item()                       # one sync per step: the curve needs every value
        if not math.isfinite(value):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if on_step:
            on_step(step + 1, steps)
        if smoothed > DIVERGED_RATIO * best:
            break
    if len(losses) < 2:
        raise ValueError("the loss was not finite from the first step: check the data and the model")
    low = min(range(len(losses)), key=losses.__getitem__)
    return {"suggested_lr": suggest(lrs, losses), "min_loss_lr": lrs[low],
            "curve": [{"lr": lr, "loss": loss} for lr, loss in zip(lrs, losses)],
            "steps": len(losses), "stopped_early": len(losses) < steps}


if __name__ == "__main__":       # the child behind the Train form's button (core.jobs.folder_job)
    from core.config import read_config_values
    from core.jobs.folder_job import run_folder_job
    run_folder_job(sys.argv[1:], lambda payload, on_progress: find_lr(read_config_values(payload)[0],
                                                                      on_step=on_progress))
