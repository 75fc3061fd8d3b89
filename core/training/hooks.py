"""What callbacks see of the training loop: its hooks (Callback), its position (LoopState), and the
best-value tracker each callback owns (Monitor).

Every hook is an optional no-op; a callback implements only what it needs. The loop
(core.training.trainer) calls them; callbacks do the rest: publishing a run's files
(core.training.callbacks), probes (core.training.probes), the fine-tune schedule
(core.training.finetune).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


class Callback:
    """Every hook is an optional no-op; a callback implements only what it needs. Each is called with
    the core.training.trainer.Trainer that runs the loop.

    Epoch ends come in two steps so no callback depends on another's order: on_validation_end is
    where callbacks update what they track (their own best value, patience), on_epoch_end is where
    they publish (files, status), by which time every callback's state is final for the epoch.
    A callback with state that a resume needs returns it from state_dict(); it is saved in the
    checkpoint under its class name.
    """

    def on_fit_start(self, trainer) -> None: ...
    def on_train_epoch_start(self, trainer) -> None: ...      # the model just set to train()
    def on_before_optimizer_step(self, trainer) -> None: ...   # gradients ready, unscaled
    def on_batch_end(self, trainer) -> None: ...
    def on_log_interval(self, trainer, row: dict) -> None: ...
    def on_validation_end(self, trainer, val_row: dict) -> None: ...
    def on_epoch_end(self, trainer, rows: list[dict]) -> None: ...
    def on_fit_end(self, trainer, outcome: str) -> None: ...
    def on_exception(self, trainer, error: BaseException) -> None: ...

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Monitor:
    """The best value of one validation metric ("val_acc" is maximised, "val_loss" minimised) and the
    epochs since it improved. Each callback that needs one owns its own."""
    metric: str = "val_acc"
    best: float | None = None
    best_epoch: int | None = None       # its epoch number, counted from 1
    since_best: int = 0

    def update(self, val_row: dict, epoch: int) -> bool:
        """Record an epoch's validation row; True when it is a new best."""
        value = val_row[self.metric.removeprefix("val_")]
        better = math.isfinite(value) and (
            self.best is None or (value > self.best if self.metric == "val_acc" else value < self.best))
        if better:
            self.best, self.best_epoch, self.since_best = value, epoch, 0
        else:
            self.since_best += 1
        return better

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "since_best": self.since_best}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.since_best = state["best"], state["best_epoch"], state["since_best"]


@dataclass
class LoopState:
    """Where the loop is; callbacks read it, and end the run by setting should_stop."""
    epoch: int = 0               # 0-based index of the epoch in progress (or next to run)
    batch_in_epoch: int = 0      # batches of `epoch` already done (non-zero after a mid-epoch stop)
    step: int = 0                # optimizer steps done since the run began
    total_steps: int = 0
    steps_per_epoch: int = 0
    should_stop: bool = False
    stop_reason: str | None = None    # "stop" (asked) or "early" (patience ran out)
    last_val: dict = field(default_factory=dict)
    grad_norm: float | None = None    # total gradient norm at the last log interval (before clipping)
