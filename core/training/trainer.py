"""The training loop: per epoch train then validate; callbacks publish metrics, checkpoints and stops.

The loop itself knows nothing of files: MetricsLogger, StatusReporter, Checkpointer, EarlyStopping
and StopFileWatcher (core.training.callbacks) do the publishing. The loop checks `state.should_stop` after every
batch, which is how Stop and early stopping end a run cleanly.

`train_step(batch)` is one optimisation step and nothing else, for the loop, an LR finder or a sweep
to share. Loss and accuracy stay on the device and reach the host once per log interval (a `.item()`
per step stalls a GPU's queue); a non-finite loss is still caught, and named, within that interval.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from core.data.augment import BatchPreprocessor, predict_logits
from core.runs.checkpoint import plain_module
from core.config import RunConfig
from core.data.datasets import Dataset
from core.models.registry import build_model, input_normalisation, model_spec, parameter_groups, set_backbone_frozen

# batch_size auto: the probe doubles from PROBE_START while a doubling gains GAIN in samples/s, within
# the GPU's memory (peak under MEMORY_HEADROOM of it) and at most an eighth of the training split, then
# takes the smallest batch within NEAR_PEAK of the best rate measured.
PROBE_START, PROBE_GAIN, PROBE_NEAR_PEAK, PROBE_MEMORY_HEADROOM = 64, 1.10, 0.90, 0.90
PROBE_WARMUP_STEPS, PROBE_TIMED_STEPS, MIN_STEPS_PER_EPOCH = 3, 5, 8
MAX_BATCH = 65_536
# compile auto: CUDA graphs (reduce-overhead) pay off where a step is launch-bound: a small model at a
# small batch (resnet18 at batch 128 on an H100: ~13 ms per step, mostly kernel launches).
CUDA_GRAPHS_MAX_PARAMS, CUDA_GRAPHS_MAX_BATCH = 30_000_000, 512
COMPILE_BACKEND = "inductor"        # tests swap in "eager": the wrapping and unwrapping without a compiler


class BatchTooLarge(RuntimeError):
    """CUDA ran out of memory at `batch_size`; `fits` is a smaller batch measured to fit (None: none did)."""

    def __init__(self, message: str, batch_size: int, fits: int | None):
        super().__init__(message)
        self.batch_size, self.fits = batch_size, fits


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


def resolve_precision(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of mixed_precision on this device; None: full float32.
    auto: bf16 on GPUs that support it, fp16 (with loss scaling) on older ones, off on CPU."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise RuntimeError(f"mixed_precision {setting} needs a CUDA GPU; this run trains on {device}: "
                           "choose auto or off")
    if setting == "fp16" or (setting == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    if not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"mixed_precision bf16: {torch.cuda.get_device_name()} does not support bfloat16; "
                           "choose auto or fp16")
    return torch.bfloat16


def compile_mode(setting: str, device: torch.device, parameters: int, batch_size: int) -> str | None:
    """The torch.compile mode of the compile setting; None: not compiled. auto compiles on CUDA only:
    on a CPU compiling took 70 s for a run of 20 (simple-cnn on digits), and the kernels it makes
    there gain little over eager ones."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting != "auto":
        return setting
    small = parameters <= CUDA_GRAPHS_MAX_PARAMS and batch_size <= CUDA_GRAPHS_MAX_BATCH
    return "reduce-overhead" if small else "default"


def find_batch_size(measure: Callable[[int], float | None], start: int = PROBE_START, limit: int = MAX_BATCH,
                    gain: float = PROBE_GAIN, near_peak: float = PROBE_NEAR_PEAK) -> tuple[int, list[dict]]:
    """(batch size, trials) for batch_size auto. `measure(b)` trains a few steps at batch b and returns
    samples/s, or None when b does not fit in memory. From `start` (halved until one fits), the batch
    doubles while it fits, stays within `limit` and a doubling gains at least `gain`; the answer is the
    smallest batch within `near_peak` of the best rate seen (a larger batch costs steps per epoch for
    little speed). BatchTooLarge when not even a batch of 1 fits."""
    trials: list[dict] = []

    def trial(b: int) -> float | None:
        rate = measure(b)
        trials.append({"batch_size": b, "samples_per_s": rate})
        return rate

    batch = max(1, min(start, limit))
    rate = trial(batch)
    while rate is None:
        if batch == 1:
            raise BatchTooLarge("not even a batch of 1 fits in GPU memory: choose a smaller model or image "
                                "size", 1, None)
        batch //= 2
        rate = trial(batch)
    if len(trials) == 1:        # the start fitted: grow
        while batch * 2 <= limit:
            bigger = trial(batch * 2)
            if bigger is None:
                break
            batch, grew, rate = batch * 2, bigger >= gain * rate, bigger
            if not grew:
                break
    fitted = [t for t in trials if t["samples_per_s"] is not None]
    best = max(t["samples_per_s"] for t in fitted)
    return min(t["batch_size"] for t in fitted if t["samples_per_s"] >= near_peak * best), trials


def largest_fitting_batch(measure: Callable[[int], float | None], below: int) -> int | None:
    """The largest of below/2, below/4, ... that `measure` finds fits in memory; None when not even 1 does."""
    batch = below // 2
    while batch >= 1:
        if measure(batch) is not None:
            return batch
        batch //= 2
    return None


def scaled_lr(config: RunConfig, effective_batch: int) -> float:
    """The lr for batch_size auto: lr is meant for lr_reference_batch samples per step; sgd scales it
    linearly with the batch (Goyal et al., 2017), adam and adamw with its square root."""
    ratio = effective_batch / config.lr_reference_batch
    return config.lr * (ratio if config.optimizer == "sgd" else math.sqrt(ratio))


def micro_batches(n: int, size: int) -> list[slice]:
    """Slices of at most `size` covering n samples; a last slice of one sample joins the one before
    (BatchNorm cannot train on a single sample)."""
    parts = [slice(start, min(start + size, n)) for start in range(0, n, size)]
    if len(parts) > 1 and parts[-1].stop - parts[-1].start == 1:
        parts[-2:] = [slice(parts[-2].start, n)]
    return parts


def probe_supported(device: torch.device) -> bool:
    """batch_size auto measures GPU memory: CUDA only (tests fake a probe on the CPU)."""
    return device.type == "cuda"


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def make_optimizer(config: RunConfig, params, fused: bool = False) -> torch.optim.Optimizer:
    """fused: one kernel for all parameters' updates (CUDA)."""
    extra = {"fused": True} if fused else {}
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay, nesterov=config.momentum > 0, **extra)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


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
        self.callbacks = list(callbacks)
        self.device = device or resolve_device(config.device)
        cuda = self.device.type == "cuda"
        torch.manual_seed(config.seed)
        c, h, w = dataset.input_shape
        model = build_model(config.model, c, h, w, len(dataset.classes))
        self.pretrained = config.pretrained and model_spec(config.model).pretrainable
        if self.pretrained and checkpoint is None:     # a resume's checkpoint holds the weights
            from core.models.pretrained import load_imagenet_weights
            load_imagenet_weights(config.model, model)
        self.amp_dtype = resolve_precision(config.mixed_precision, self.device)
        self.amp = self.amp_dtype is not None
        # GPU settings that cost nothing in accuracy: NHWC convolutions, cuDNN's autotuner, fused updates.
        self.channels_last = cuda and has_convolutions(model)
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.model = model.to(self.device, memory_format=torch.channels_last) if self.channels_last \
            else model.to(self.device)
        self.optimizer = make_optimizer(config, self._parameters(), fused=cuda)
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
        self.batch_probe: dict | None = None
        self.batch_size = self._choose_batch_size(checkpoint, batch_size)
        self.effective_batch = self.batch_size * config.accumulate_steps
        if config.batch_size == "auto":
            self._scale_lr(scaled_lr(config, self.effective_batch))
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
            options = {"mode": self.compile_mode} if COMPILE_BACKEND == "inductor" else {}
            self.train_forward = torch.compile(self.model, backend=COMPILE_BACKEND, **options)
        self.best = Monitor(config.best_metric)     # the run's best, for its status
        self.state = LoopState(steps_per_epoch=steps_per_epoch,
                               total_steps=steps_per_epoch * config.epochs)
        self.meter = IntervalMeter(config.log_interval, self.device)
        self._grad_norm = None     # measured by train_step at each logged step
        self.data_wait_s = 0.0     # time the last epoch waited for its batches (a streamed folder's decoding)

    # --- batch size ------------------------------------------------------------------------
    def _choose_batch_size(self, checkpoint: dict | None, asked: int | None) -> int:
        """The batch a resumed run started with, the one asked for (a retry), the setting's, or for
        auto the probe's (recorded in self.batch_probe)."""
        if checkpoint is not None and checkpoint.get("batch_size"):
            return int(checkpoint["batch_size"])
        if asked:
            return asked
        if self.config.batch_size != "auto":
            return self.config.batch_size
        if not probe_supported(self.device):
            raise RuntimeError("batch_size auto needs a CUDA GPU (it probes the GPU's memory and speed); "
                               f"this run trains on {self.device}: choose a number")
        limit = max(1, min(MAX_BATCH, len(self.train_split) // (MIN_STEPS_PER_EPOCH * self.config.accumulate_steps)))
        started = time.perf_counter()
        with self._probing():
            chosen, trials = find_batch_size(self.measure_batch, limit=limit)
        self.batch_probe = {"chosen": chosen, "limit": limit, "trials": trials,
                            "seconds": round(time.perf_counter() - started, 2)}
        return chosen

    def _scale_lr(self, lr: float) -> None:
        """Every parameter group keeps its share of the lr (a pretrained backbone its factor)."""
        for group in self.optimizer.param_groups:
            group["lr"] *= lr / self.config.lr
        self.base_lr = lr

    def measure_batch(self, batch_size: int) -> float | None:
        """Training samples/s at `batch_size` (a few warm-up steps, then timed ones, on random pixels:
        speed and memory do not depend on them); None when it does not fit: CUDA ran out of memory,
        or the peak took more than PROBE_MEMORY_HEADROOM of the GPU, which later steps may exceed."""
        c, h, w = self.dataset.input_shape
        cuda = self.device.type == "cuda"
        try:
            images = torch.randint(0, 256, (batch_size, c, h, w), dtype=torch.uint8, device=self.device)
            labels = torch.randint(0, len(self.dataset.classes), (batch_size,), device=self.device)
            if cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            for _ in range(PROBE_WARMUP_STEPS):
                self.train_step((images, labels))
            if cuda:
                torch.cuda.synchronize(self.device)
            started = time.perf_counter()
            for _ in range(PROBE_TIMED_STEPS):
                loss, _ = self.train_step((images, labels))
            float(loss)          # the sync: every step has run
            elapsed = time.perf_counter() - started
        except torch.cuda.OutOfMemoryError:
            return None
        finally:
            images = labels = loss = None
            self.optimizer.zero_grad(set_to_none=True)
            free_cuda_memory()
        if cuda and torch.cuda.max_memory_allocated(self.device) > \
                PROBE_MEMORY_HEADROOM * torch.cuda.get_device_properties(self.device).total_memory:
            return None
        return batch_size * PROBE_TIMED_STEPS / max(elapsed, 1e-9)

    @contextlib.contextmanager
    def _probing(self):
        """While measuring: no callbacks, and the weights, optimizer, scaler and RNG are put back
        after, so the run goes on exactly as if no probe had been."""
        saved = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                 self.scaler.state_dict(), torch.get_rng_state(),
                 torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
        callbacks, state, forward = self.callbacks, getattr(self, "state", None), self.train_forward
        self.callbacks, self.train_forward = [], self.model      # eager: no compiling for each size tried
        self.state = LoopState(steps_per_epoch=1, total_steps=1)     # probe steps count for nothing
        was_training = self.model.training
        self.model.train()
        try:
            yield
        finally:
            weights, optimizer, scaler, rng, cuda_rng = saved
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(optimizer)
            if scaler:
                self.scaler.load_state_dict(scaler)
            torch.set_rng_state(rng)
            if cuda_rng:
                torch.cuda.set_rng_state_all(cuda_rng)
            self.callbacks, self.train_forward = callbacks, forward
            self.model.train(was_training)
            if state is None:
                del self.state
            else:
                self.state = state

    def batch_after_oom(self, failed: int) -> int | None:
        """After CUDA ran out of memory at `failed`: the largest smaller batch measured to fit now."""
        with self._probing():
            return largest_fitting_batch(self.measure_batch, failed)

    def setup(self) -> dict:
        """How this run uses its device, for status.json."""
        facts = {"precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.amp_dtype, "off"),
                 "channels_last": self.channels_last, "cudnn_benchmark": self.device.type == "cuda",
                 "fused_optimizer": self.device.type == "cuda", "compile": self.compile_mode,
                 "batch_size": self.batch_size, "accumulate_steps": self.config.accumulate_steps,
                 "effective_batch": self.effective_batch,
                 "lr": self.base_lr}
        if self.device.type == "cuda":
            facts["gpu"] = torch.cuda.get_device_name(self.device)
        return facts

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
        return None if not self.pretrained or self.backbone_frozen else self.optimizer.param_groups[1]["lr"]

    def _lrs(self) -> dict:
        """The lr fields of a metrics row: the head's (the form's lr) and, while it trains, the backbone's."""
        backbone = self.backbone_lr
        return {"lr": self.lr} if backbone is None else {"lr": self.lr, "backbone_lr": backbone}

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
        self._emit("on_before_optimizer_step")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_sum, correct

    def _train_epoch(self) -> dict:
        config, s = self.config, self.state
        self.model.train()
        if self.pretrained:
            set_backbone_frozen(self.model, config.model, self.backbone_frozen)
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
                self._emit("on_log_interval", {
                    "step": s.step, "epoch": s.epoch + 1, "split": "train", "kind": "step",
                    "loss": total / seen, "acc": right / seen, **self._lrs(),
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


def free_cuda_memory() -> None:
    """Give back what a failed or finished allocation left cached (after an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
