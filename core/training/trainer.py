"""The training loop: per epoch train then validate; callbacks publish metrics, checkpoints and stops.

The loop itself knows nothing of files, devices' tricks or fine-tuning: callbacks publish
(core.training.callbacks), probe (core.training.probes) and freeze a backbone
(core.training.finetune); the device, precision and compile choices come from
core.training.accelerator, the optimizer and schedule from core.training.optimizers, batch_size auto
from core.training.batch_size. The loop checks `state.should_stop` after every batch, which is how
Stop and early stopping end a run cleanly.

`train_step(batch)` is one optimisation step and nothing else, for the loop, an LR finder or a sweep
to share. Loss and accuracy stay on the device and reach the host once per log interval (a `.item()`
per step stalls a GPU's queue); a non-finite loss is still caught, and named, within that interval.
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from core.config import RunConfig
from core.data.augment import BatchPreprocessor, predict_logits
from core.data.datasets import Dataset
from core.models.registry import build_model, input_normalisation, model_spec
from core.runs.checkpoint import plain_module
from core.training.accelerator import (
    compile_mode,
    compiled,
    free_cuda_memory,
    place_model,
    precision_name,
    resolve_device,
    resolve_precision,
)
from core.training.batch_size import probe_batch_size
from core.training.finetune import BackboneFinetuning
from core.training.hooks import Callback, LoopState, Monitor
from core.training.optimizers import make_optimizer, make_scheduler, optimizer_groups, scaled_lr, set_lr


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite at `step`."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def epoch_order(n: int, seed: int, epoch: int, device="cpu") -> torch.Tensor:
    """The sample order of one epoch, a pure function of (seed, epoch): a resumed run replays it."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def micro_batches(n: int, size: int) -> list[slice]:
    """Slices of at most `size` covering n samples; a last slice of one sample joins the one before
    (BatchNorm cannot train on a single sample)."""
    parts = [slice(start, min(start + size, n)) for start in range(0, n, size)]
    if len(parts) > 1 and parts[-1].stop - parts[-1].start == 1:
        parts[-2:] = [slice(parts[-2].start, n)]
    return parts


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
    """One run's model, optimizer and loop. `checkpoint` (a latest.pt being resumed) supplies the
    weights, so ImageNet weights are not read again, and the batch size the run was started with."""

    def __init__(self, config: RunConfig, dataset: Dataset, callbacks: list[Callback] = (),
                 device: torch.device | None = None, checkpoint: dict | None = None,
                 batch_size: int | None = None):
        self.config = config
        self.dataset = dataset
        self.device = device or resolve_device(config.device)
        cuda = self.device.type == "cuda"
        torch.manual_seed(config.seed)
        c, h, w = dataset.input_shape
        model = build_model(config.model, c, h, w, len(dataset.classes))
        self.pretrained = config.pretrained and model_spec(config.model).pretrainable
        if self.pretrained and checkpoint is None:     # a resume's checkpoint holds the weights
            from core.models.pretrained import load_imagenet_weights
            load_imagenet_weights(config.model, model)
        # The settings' own callbacks first: the backbone's schedule is the model's, whoever runs it.
        self.callbacks = ([BackboneFinetuning(config)] if self.pretrained else []) + list(callbacks)
        self.amp_dtype = resolve_precision(config.mixed_precision, self.device)
        self.amp = self.amp_dtype is not None
        self.model, self.channels_last = place_model(model, self.device)
        self.optimizer = make_optimizer(config, optimizer_groups(self.model, config, self.pretrained), fused=cuda)
        self.train_split = dataset.splits["train"].to(self.device) if cuda else dataset.splits["train"]
        self.val_split = dataset.splits["val"].to(self.device) if cuda else dataset.splits["val"]
        # ImageNet's statistics for ImageNet weights; best.pt records them for inference and export.
        self.mean, self.std = input_normalisation(config.model, self.pretrained, dataset.mean, dataset.std)
        self.preprocess = BatchPreprocessor(self.mean, self.std, config, self.device, self.channels_last)
        weight = None
        if config.class_weighted_loss:
            counts = torch.bincount(self.train_split.labels.cpu(), minlength=len(dataset.classes)).float()
            weight = (counts.sum() / (len(counts) * counts.clamp_min(1))).to(self.device)
        self.class_weight = weight
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.train_forward = self.model    # the compiled module, when compiled (set below)
        self.base_lr = config.lr
        self.batch_probe: dict | None = None     # what batch_size auto measured (status.json shows it)
        self.batch_size = self._choose_batch_size(checkpoint, batch_size)
        self.effective_batch = self.batch_size * config.accumulate_steps
        if config.batch_size == "auto":
            self.base_lr = scaled_lr(config, self.effective_batch)
            set_lr(self.optimizer, self.base_lr, config.lr)
        n_train = len(self.train_split)
        # A last batch of one sample breaks BatchNorm in training mode: drop that one sample.
        self.train_size = n_train - 1 if n_train % self.effective_batch == 1 and n_train > 1 else n_train
        steps_per_epoch = math.ceil(self.train_size / self.effective_batch)
        self.scheduler, self.scheduler_per_batch = make_scheduler(config, self.optimizer, steps_per_epoch)
        parameters = sum(p.numel() for p in self.model.parameters())
        self.compile_mode = compile_mode(config.compile, self.device, parameters, self.batch_size)
        if self.compile_mode:
            # Only the training forward is compiled; self.model stays the plain module that checkpoints,
            # probes, freezing and validation use, so no `_orig_mod.` key ever reaches a file.
            self.train_forward = compiled(self.model, self.compile_mode)
        self.best = Monitor(config.best_metric)     # the run's best, for its status
        self.state = LoopState(steps_per_epoch=steps_per_epoch,
                               total_steps=steps_per_epoch * config.epochs)
        self.meter = IntervalMeter(config.log_interval, self.device)
        self._grad_norm = None     # measured by train_step at each logged step
        self.data_wait_s = 0.0     # time the last epoch waited for its batches (a streamed folder's decoding)

    def _choose_batch_size(self, checkpoint: dict | None, asked: int | None) -> int:
        """The batch a resumed run started with, the one asked for (a retry), the setting's, or for
        auto the probe's (recorded in self.batch_probe)."""
        if checkpoint is not None and checkpoint.get("batch_size"):
            return int(checkpoint["batch_size"])
        if asked:
            return asked
        if self.config.batch_size != "auto":
            return self.config.batch_size
        chosen, self.batch_probe = probe_batch_size(self)
        return chosen

    def setup(self) -> dict:
        """How this run uses its device, for status.json."""
        facts = {"precision": precision_name(self.amp_dtype),
                 "channels_last": self.channels_last, "cudnn_benchmark": self.device.type == "cuda",
                 "fused_optimizer": self.device.type == "cuda", "compile": self.compile_mode,
                 "batch_size": self.batch_size, "accumulate_steps": self.config.accumulate_steps,
                 "effective_batch": self.effective_batch,
                 "lr": self.base_lr}
        if self.device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(self.device)
        return facts

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
            "batch_size": self.batch_size,      # what batch_size auto found: a resume keeps it
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

    @property
    def backbone_lr(self) -> float | None:
        """A pretrained backbone's own lr while it trains (None while frozen, or without a backbone)."""
        groups = self.optimizer.param_groups
        trains = len(groups) > 1 and any(p.requires_grad for p in groups[1]["params"])
        return groups[1]["lr"] if trains else None

    def _lrs(self) -> dict:
        """The lr fields of a metrics row: the head's (the form's lr) and, while it trains, the backbone's."""
        backbone = self.backbone_lr
        return {"lr": self.lr} if backbone is None else {"lr": self.lr, "backbone_lr": backbone}

    def emit(self, hook: str, *args) -> None:
        """Call `hook` on every callback (the LR finder starts its steps as an epoch does)."""
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def fit(self) -> str:
        """Train until the last epoch, a stop or early stopping. Returns 'completed' or 'stopped';
        raises on failure (TrainingDiverged for a NaN/inf loss) after telling the callbacks."""
        try:
            return self._fit()
        except BaseException as error:
            self.emit("on_exception", error)
            raise

    def _fit(self) -> str:
        config, s = self.config, self.state
        self.emit("on_fit_start")
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
            self.emit("on_validation_end", val_row)
            s.epoch += 1
            s.batch_in_epoch = 0
            self.emit("on_epoch_end", [train_row, val_row])
        outcome = "stopped" if s.should_stop and s.stop_reason == "stop" else "completed"
        self.emit("on_fit_end", outcome)
        return outcome

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch of (uint8 images, labels) already on the device:
        augment and normalise, forward, backward (in micro-batches of batch_size when the batch is
        larger: gradient accumulation), optimizer step. Returns (loss, correct) as device tensors, so
        nothing waits for the GPU here. The learning-rate schedule is the caller's."""
        images, labels = batch
        self.optimizer.zero_grad(set_to_none=True)
        parts = micro_batches(len(labels), self.batch_size)
        loss_sum = correct = None
        for part in parts:
            inputs, targets = self.preprocess(images[part], train=True), labels[part]
            if self.compile_mode == "reduce-overhead":
                torch.compiler.cudagraph_mark_step_begin()     # the last step's graph outputs are free
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp):
                logits = self.train_forward(inputs)
                loss = F.cross_entropy(logits, targets, weight=self.class_weight,
                                       label_smoothing=self.config.label_smoothing)
            right = (logits.argmax(1) == targets).sum()
            if len(parts) > 1:      # each micro-batch's mean weighs by its share of the batch
                loss = loss * ((part.stop - part.start) / len(labels))
            self.scaler.scale(loss).backward()
            loss = loss.detach()
            loss_sum, correct = (loss, right) if loss_sum is None else (loss_sum + loss, correct + right)
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
        self.emit("on_before_optimizer_step")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_sum, correct

    def _train_epoch(self) -> dict:
        config, s = self.config, self.state
        self.model.train()
        self.emit("on_train_epoch_start")
        order = epoch_order(len(self.train_split), config.seed, s.epoch)[:self.train_size]
        order = order[s.batch_in_epoch * self.effective_batch:]
        epoch_start = interval_start = time.perf_counter()
        epoch_loss, epoch_correct, epoch_seen = 0.0, 0, 0
        pin = self.device.type == "cuda"
        batches = iter(self.train_split.batches(order, self.effective_batch, pin_memory=pin))
        self.data_wait_s = 0.0
        while True:
            waited = time.perf_counter()
            try:       # a streamed folder's batches come from DataLoader workers: how long they kept us
                images, labels = next(batches)
            except StopIteration:
                break
            self.data_wait_s += time.perf_counter() - waited
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
                self.emit("on_log_interval", {
                    "step": s.step, "epoch": s.epoch + 1, "split": "train", "kind": "step",
                    "loss": total / seen, "acc": right / seen, **self._lrs(),
                    "grad_norm": s.grad_norm, "samples_per_s": seen / max(now - interval_start, 1e-9)})
                epoch_loss, epoch_correct, epoch_seen = epoch_loss + total, epoch_correct + right, epoch_seen + seen
                interval_start = now
            self.emit("on_batch_end")
            if s.should_stop:
                break
        # The steps since the last log line count for the epoch (and are checked for NaN) too.
        total, right, seen = self.meter.read(s.step)
        epoch_loss, epoch_correct, epoch_seen = epoch_loss + total, epoch_correct + right, epoch_seen + seen
        elapsed = time.perf_counter() - epoch_start
        return {"step": s.step, "epoch": s.epoch + 1, "split": "train", "kind": "epoch",
                "loss": epoch_loss / max(epoch_seen, 1), "acc": epoch_correct / max(epoch_seen, 1),
                **self._lrs(), "samples_per_s": epoch_seen / max(elapsed, 1e-9), "epoch_time": elapsed,
                "data_wait_s": self.data_wait_s}

    @torch.inference_mode()
    def validate(self) -> dict:
        s, model = self.state, self.model
        model.eval()
        start = time.perf_counter()
        batch_size = self.batch_size * 4      # no gradients: larger batches fit
        while True:
            try:
                total_loss, correct = self._evaluate_split(self.val_split, batch_size)
                break
            except torch.cuda.OutOfMemoryError:
                if batch_size <= 1:
                    raise
                batch_size //= 2          # nothing was changed: the same figures at a smaller batch
                free_cuda_memory()
        seen = len(self.val_split)
        return {"step": s.step, "epoch": s.epoch + 1, "split": "val", "kind": "epoch",
                "loss": total_loss.item() / max(seen, 1), "acc": correct.item() / max(seen, 1),
                "eval_time": time.perf_counter() - start}

    def _evaluate_split(self, split, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss, correct) over a split, on the device."""
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        for images, labels in split.batches(torch.arange(len(split)), batch_size):
            images, labels = images.to(self.device), labels.to(self.device)
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp):
                logits = predict_logits(self.model, self.preprocess(images, train=False), self.config.tta_flip)
            total_loss += F.cross_entropy(logits.float(), labels, reduction="sum")
            correct += (logits.argmax(1) == labels).sum()
        return total_loss, correct
