"""The training loop: per epoch train then validate; callbacks publish metrics, checkpoints and stops.

The loop itself knows nothing of files: MetricsLogger, StatusReporter, Checkpointer, EarlyStopping
and StopFileWatcher (core.callbacks) do the publishing. The loop checks `state.should_stop` after every
batch, which is how Stop and early stopping end a run cleanly.

`train_step(batch)` is one optimisation step and nothing else, for the loop, an LR finder or a sweep
to share. Loss and accuracy stay on the device and reach the host once per log interval (a `.item()`
per step stalls a GPU's queue); a non-finite loss is still caught, and named, within that interval.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from core.augment import BatchPreprocessor
from core.checkpoint import plain_module
from core.config import RunConfig
from core.data import Dataset
from core.models import build_model, input_normalisation, model_spec, parameter_groups, set_backbone_frozen


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite at `step`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Callback:
    """Every hook is an optional no-op; a callback implements only what it needs.

    Epoch ends come in two steps so no callback depends on another's order: on_validation_end is
    where callbacks update what they track (their own best value, patience), on_epoch_end is where
    they publish (files, status), by which time every callback's state is final for the epoch.
    A callback with state that a resume needs returns it from state_dict(); it is saved in the
    checkpoint under its class name.
    """

    def on_fit_start(self, trainer: "Trainer") -> None: ...
    def on_before_optimizer_step(self, trainer: "Trainer") -> None: ...   # gradients ready, unscaled
    def on_batch_end(self, trainer: "Trainer") -> None: ...
    def on_log_interval(self, trainer: "Trainer", row: dict) -> None: ...
    def on_validation_end(self, trainer: "Trainer", val_row: dict) -> None: ...
    def on_epoch_end(self, trainer: "Trainer", rows: list[dict]) -> None: ...
    def on_fit_end(self, trainer: "Trainer", outcome: str) -> None: ...
    def on_exception(self, trainer: "Trainer", error: BaseException) -> None: ...

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
    epoch: int = 0               # 0-based index of the epoch in progress (or next to run)
    batch_in_epoch: int = 0      # batches of `epoch` already done (non-zero after a mid-epoch stop)
    step: int = 0                # optimizer steps done since the run began
    total_steps: int = 0
    steps_per_epoch: int = 0
    should_stop: bool = False
    stop_reason: str | None = None    # "stop" (asked) or "early" (patience ran out)
    last_val: dict = field(default_factory=dict)
    grad_norm: float | None = None    # total gradient norm at the last log interval (before clipping)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


def epoch_order(n: int, seed: int, epoch: int, device="cpu") -> torch.Tensor:
    """The sample order of one epoch, a pure function of (seed, epoch): a resumed run replays it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: RunConfig, optimizer, steps_per_epoch: int):
    """(scheduler, steps_per_batch): onecycle steps every batch, the others every epoch."""
    s = torch.optim.lr_scheduler
    if config.scheduler == "step":
        return s.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False
    if config.scheduler == "cosine":
        return s.CosineAnnealingLR(optimizer, T_max=config.epochs), False
    if config.scheduler == "onecycle":
        return s.OneCycleLR(optimizer, max_lr=[group["lr"] for group in optimizer.param_groups],
                            epochs=config.epochs,
                            steps_per_epoch=steps_per_epoch), True
    if config.scheduler == "plateau":
        return s.ReduceLROnPlateau(optimizer, factor=config.gamma, patience=2), False
    return None, False


class IntervalMeter:
    """Loss and accuracy of the steps since the last log interval, kept on the device: one host sync
    per interval, and the exact step of a first non-finite loss (each step's loss has a slot)."""

    def __init__(self, capacity: int, device: torch.device):
        self.losses = torch.zeros(capacity, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.sizes: list[int] = []

    def add(self, loss: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        self.losses[len(self.sizes)] = loss
        self.correct += correct
        self.sizes.append(n)

    def read(self, last_step: int) -> tuple[float, int, int]:
        """(summed loss, correct, samples) of the interval, then empty it. TrainingDiverged names
        the step whose loss was not finite."""
        count = len(self.sizes)
        if not count:
            return 0.0, 0, 0
        values = self.losses[:count].tolist()        # the sync
        correct = int(self.correct.item())
        for i, value in enumerate(values):
            if not math.isfinite(value):
                step = last_step - count + 1 + i
                raise TrainingDiverged(f"loss became {value} at step {step}; try a lower lr or gradient clipping", step)
        total = sum(v * n for v, n in zip(values, self.sizes))
        seen = sum(self.sizes)
        self.correct.zero_()
        self.sizes.clear()
        return total, correct, seen


class Trainer:
    def __init__(self, config: RunConfig, dataset: Dataset, callbacks: list[Callback] = (),
                 device: torch.device | None = None):
        self.config = config
        self.dataset = dataset
        self.callbacks = list(callbacks)
        self.device = device or resolve_device(config.device)
        torch.manual_seed(config.seed)
        c, h, w = dataset.input_shape
        model = build_model(config.model, c, h, w, len(dataset.classes))
        self.pretrained = config.pretrained and model_spec(config.model).pretrainable
        if self.pretrained:
            from core.pretrained import load_imagenet_weights
            load_imagenet_weights(config.model, model)
        self.model = model.to(self.device)
        self.optimizer = make_optimizer(config, self._parameters())
        self.train_split = dataset.splits["train"].to(self.device) if self.device.type == "cuda" \
            else dataset.splits["train"]
        self.val_split = dataset.splits["val"].to(self.device) if self.device.type == "cuda" \
            else dataset.splits["val"]
        n_train = len(self.train_split)
        # A last batch of one sample breaks BatchNorm in training mode: drop that one sample.
        self.train_size = n_train - 1 if n_train % config.batch_size == 1 and n_train > 1 else n_train
        steps_per_epoch = math.ceil(self.train_size / config.batch_size)
        self.scheduler, self.scheduler_per_batch = make_scheduler(config, self.optimizer, steps_per_epoch)
        # ImageNet's statistics for ImageNet weights; best.pt records them for inference and export.
        self.mean, self.std = input_normalisation(config.model, self.pretrained, dataset.mean, dataset.std)
        self.preprocess = BatchPreprocessor(self.mean, self.std, config, self.device)
        weight = None
        if config.class_weighted_loss:
            counts = torch.bincount(self.train_split.labels.cpu(), minlength=len(dataset.classes)).float()
            weight = (counts.sum() / (len(counts) * counts.clamp_min(1))).to(self.device)
        self.class_weight = weight
        self.amp = config.mixed_precision and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.best = Monitor(config.best_metric)     # the run's best, for its status
        self.state = LoopState(steps_per_epoch=steps_per_epoch,
                               total_steps=steps_per_epoch * config.epochs)
        self.meter = IntervalMeter(config.log_interval, self.device)
        self._grad_norm = None     # measured by train_step at each logged step

    def _parameters(self):
        """A pretrained backbone learns at lr x backbone_lr_factor. The head's group comes first, so
        the lr logged (group 0's) is the one the form asked for."""
        if not self.pretrained:
            return self.model.parameters()
        groups = parameter_groups(self.model, self.config.model)
        return [{"params": groups["head"]},
                {"params": groups["backbone"], "lr": self.config.lr * self.config.backbone_lr_factor}]

    @property
    def backbone_frozen(self) -> bool:
        """Frozen throughout (freeze_backbone) or during the first finetune_head_epochs epochs."""
        c = self.config
        return self.pretrained and (c.freeze_backbone or self.state.epoch < c.finetune_head_epochs)

    # --- checkpoint state ------------------------------------------------------------------
    def state_dict(self, for_inference: bool = False) -> dict:
        """What rebuilds the model for inference, plus, unless for_inference, everything a resume
        needs. Plain tensors and Python values only, so torch.load(weights_only=True) reads it."""
        s = self.state
        state = {
            "model": plain_module(self.model).state_dict(),
            "loop": {"epoch": s.epoch, "batch_in_epoch": s.batch_in_epoch, "step": s.step,
                     "best_value": self.best.best, "best_epoch": self.best.best_epoch},
            "config": self.config.to_dict(),
            "classes": list(self.dataset.classes),
            "input_shape": list(self.dataset.input_shape),
            "mean": list(self.mean), "std": list(self.std),
        }
        if for_inference:
            return state
        return {**state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict(),
                "callbacks": {type(cb).__name__: cb_state for cb in self.callbacks
                              if (cb_state := cb.state_dict()) is not None},
                "rng": {"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}}

    def load_state_dict(self, checkpoint: dict) -> None:
        plain_module(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler"):
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        loop = checkpoint["loop"]
        self.state.epoch, self.state.batch_in_epoch, self.state.step = \
            loop["epoch"], loop["batch_in_epoch"], loop["step"]
        self.best.best, self.best.best_epoch = loop["best_value"], loop["best_epoch"]
        saved = checkpoint.get("callbacks", {})
        for callback in self.callbacks:
            if type(callback).__name__ in saved:
                callback.load_state_dict(saved[type(callback).__name__])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])

    # --- the loop ----------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def fit(self) -> str:
        """Train until the last epoch, a stop or early stopping. Returns 'completed' or 'stopped';
        raises on failure (TrainingDiverged for a NaN/inf loss) after telling the callbacks."""
        try:
            return self._fit()
        except BaseException as error:
            self._emit("on_exception", error)
            raise

    def _fit(self) -> str:
        config, s = self.config, self.state
        self._emit("on_fit_start")
        while s.epoch < config.epochs and not s.should_stop:
            train_row = self._train_epoch()
            if s.should_stop and s.batch_in_epoch < s.steps_per_epoch:
                break     # stopped mid-epoch: the checkpoint keeps the position, a resume finishes it
            val_row = self.validate()
            s.last_val = val_row
            if self.scheduler is not None and not self.scheduler_per_batch:
                if config.scheduler == "plateau":
                    self.scheduler.step(val_row["loss"])
                else:
                    self.scheduler.step()
            self.best.update(val_row, s.epoch + 1)
            self._emit("on_validation_end", val_row)
            s.epoch += 1
            s.batch_in_epoch = 0
            self._emit("on_epoch_end", [train_row, val_row])
        outcome = "stopped" if s.should_stop and s.stop_reason == "stop" else "completed"
        self._emit("on_fit_end", outcome)
        return outcome

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch of (uint8 images, labels) already on the device:
        augment and normalise, forward, backward, optimizer step. Returns (loss, correct) as device
        tensors, so nothing waits for the GPU here. The learning-rate schedule is the caller's."""
        images, labels = batch
        inputs = self.preprocess(images, train=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(inputs)
            loss = F.cross_entropy(logits, labels, weight=self.class_weight,
                                   label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # Always: on_before_optimizer_step promises true gradients, and scaler.step() would unscale anyway.
        self.scaler.unscale_(self.optimizer)
        logging_step = (self.state.step + 1) % self.config.log_interval == 0
        if self.config.grad_clip > 0 or logging_step:
            if self.config.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            else:
                norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in self.model.parameters() if p.grad is not None])
            if logging_step:
                self._grad_norm = norm
        self._emit("on_before_optimizer_step")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), (logits.argmax(1) == labels).sum()

    def _train_epoch(self) -> dict:
        config, s = self.config, self.state
        self.model.train()
        if self.pretrained:
            set_backbone_frozen(self.model, config.model, self.backbone_frozen)
        order = epoch_order(len(self.train_split), config.seed, s.epoch)[:self.train_size]
        order = order[s.batch_in_epoch * config.batch_size:]
        epoch_start = interval_start = time.perf_counter()
        epoch_loss, epoch_correct, epoch_seen = 0.0, 0, 0
        pin = self.device.type == "cuda"
        for images, labels in self.train_split.batches(order, config.batch_size, pin_memory=pin):
            batch = (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
            loss, correct = self.train_step(batch)
            self.meter.add(loss, correct, len(labels))
            if self.scheduler_per_batch and s.step < s.total_steps - 1:
                self.scheduler.step()
            s.step += 1
            s.batch_in_epoch += 1
            if s.step % config.log_interval == 0:
                total, right, seen = self.meter.read(s.step)
                s.grad_norm = float(self._grad_norm)
                now = time.perf_counter()
                self._emit("on_log_interval", {
                    "step": s.step, "epoch": s.epoch + 1, "split": "train", "kind": "step",
                    "loss": total / seen, "acc": right / seen, "lr": self.lr,
                    "grad_norm": s.grad_norm, "samples_per_s": seen / max(now - interval_start, 1e-9)})
                epoch_loss, epoch_correct, epoch_seen = epoch_loss + total, epoch_correct + right, epoch_seen + seen
                interval_start = now
            self._emit("on_batch_end")
            if s.should_stop:
                break
        # The steps since the last log line count for the epoch (and are checked for NaN) too.
        total, right, seen = self.meter.read(s.step)
        epoch_loss, epoch_correct, epoch_seen = epoch_loss + total, epoch_correct + right, epoch_seen + seen
        elapsed = time.perf_counter() - epoch_start
        return {"step": s.step, "epoch": s.epoch + 1, "split": "train", "kind": "epoch",
                "loss": epoch_loss / max(epoch_seen, 1), "acc": epoch_correct / max(epoch_seen, 1),
                "lr": self.lr, "samples_per_s": epoch_seen / max(elapsed, 1e-9), "epoch_time": elapsed}

    @torch.inference_mode()
    def validate(self) -> dict:
        s, model = self.state, self.model
        model.eval()
        start = time.perf_counter()
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        seen = len(self.val_split)
        order = torch.arange(seen)
        for images, labels in self.val_split.batches(order, self.config.batch_size * 4):
            images, labels = images.to(self.device), labels.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                logits = model(self.preprocess(images, train=False))
            total_loss += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        return {"step": s.step, "epoch": s.epoch + 1, "split": "val", "kind": "epoch",
                "loss": total_loss.item() / max(seen, 1), "acc": correct.item() / max(seen, 1),
                "eval_time": time.perf_counter() - start}
