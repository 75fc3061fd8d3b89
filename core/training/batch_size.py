"""batch_size auto, and what is left after CUDA ran out of memory: measure how fast a batch trains and
whether it fits, beside the loop (Lightning's BatchSizeFinder), on the trainer about to run.

`find_batch_size(measure)` is a pure rule over a callable that trains a few steps at a batch size and
returns samples/s or None (out of memory, or a peak above 90% of the GPU); `measure_batch` is the real
one, run on random pixels with the callbacks muted, and the weights, optimizer, scaler and RNG are put
back after it, so the run goes on exactly as if no probe had been.
"""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Callable

import torch

from core.training.accelerator import free_cuda_memory
from core.training.hooks import LoopState

# The probe doubles from PROBE_START while a doubling gains GAIN in samples/s, within the GPU's memory
# (peak under MEMORY_HEADROOM of it) and at most an eighth of the training split, then takes the
# smallest batch within NEAR_PEAK of the best rate measured.
PROBE_START, PROBE_GAIN, PROBE_NEAR_PEAK, PROBE_MEMORY_HEADROOM = 64, 1.10, 0.90, 0.90
PROBE_WARMUP_STEPS, PROBE_TIMED_STEPS, MIN_STEPS_PER_EPOCH = 3, 5, 8
MAX_BATCH = 65_536


class BatchTooLarge(RuntimeError):
    """CUDA ran out of memory at `batch_size`; `fits` is a smaller batch measured to fit (None: none did)."""

    def __init__(self, message: str, batch_size: int, fits: int | None):
        super().__init__(message)
        self.batch_size, self.fits = batch_size, fits


def probe_supported(device: torch.device) -> bool:
    """batch_size auto measures GPU memory: CUDA only (tests fake a probe on the CPU)."""
    return device.type == "cuda"


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


def probe_batch_size(trainer) -> tuple[int, dict]:
    """(batch size, what the probe did) for batch_size auto, measured on `trainer`'s model."""
    config = trainer.config
    if not probe_supported(trainer.device):
        raise RuntimeError("batch_size auto needs a CUDA GPU (it probes the GPU's memory and speed); "
                           f"this run trains on {trainer.device}: choose a number")
    limit = max(1, min(MAX_BATCH, len(trainer.train_split) // (MIN_STEPS_PER_EPOCH * config.accumulate_steps)))
    started = time.perf_counter()
    with probing(trainer):
        chosen, trials = find_batch_size(lambda b: measure_batch(trainer, b), limit=limit)
    return chosen, {"chosen": chosen, "limit": limit, "trials": trials,
                    "seconds": round(time.perf_counter() - started, 2)}


def batch_after_oom(trainer, failed: int) -> int | None:
    """After CUDA ran out of memory at `failed`: the largest smaller batch measured to fit now."""
    with probing(trainer):
        return largest_fitting_batch(lambda b: measure_batch(trainer, b), failed)


def measure_batch(trainer, batch_size: int) -> float | None:
    """Training samples/s at `batch_size` (a few warm-up steps, then timed ones, on random pixels:
    speed and memory do not depend on them); None when it does not fit: CUDA ran out of memory,
    or the peak took more than PROBE_MEMORY_HEADROOM of the GPU, which later steps may exceed."""
    c, h, w = trainer.dataset.input_shape
    device = trainer.device
    cuda = device.type == "cuda"
    try:
        images = torch.randint(0, 256, (batch_size, c, h, w), dtype=torch.uint8, device=device)
        labels = torch.randint(0, len(trainer.dataset.classes), (batch_size,), device=device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(PROBE_WARMUP_STEPS):
            trainer.train_step((images, labels))
        if cuda:
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(PROBE_TIMED_STEPS):
            loss, _ = trainer.train_step((images, labels))
        float(loss)          # the sync: every step has run
        elapsed = time.perf_counter() - started
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        images = labels = loss = None
        trainer.optimizer.zero_grad(set_to_none=True)
        free_cuda_memory()
    if cuda and torch.cuda.max_memory_allocated(device) > \
            PROBE_MEMORY_HEADROOM * torch.cuda.get_device_properties(device).total_memory:
        return None
    return batch_size * PROBE_TIMED_STEPS / max(elapsed, 1e-9)


@contextlib.contextmanager
def probing(trainer):
    """While measuring: no callbacks, an eager forward, steps that count for nothing, and after it the
    weights, optimizer, scaler and RNG as they were."""
    model = trainer.model
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(trainer.optimizer.state_dict()),
             trainer.scaler.state_dict(), torch.get_rng_state(),
             torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])
    callbacks, state, forward = trainer.callbacks, getattr(trainer, "state", None), trainer.train_forward
    trainer.callbacks, trainer.train_forward = [], model      # eager: no compiling for each size tried
    trainer.state = LoopState(steps_per_epoch=1, total_steps=1)
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        weights, optimizer, scaler, rng, cuda_rng = saved
        model.load_state_dict(weights)
        trainer.optimizer.load_state_dict(optimizer)
        if scaler:
            trainer.scaler.load_state_dict(scaler)
        torch.set_rng_state(rng)
        if cuda_rng:
            torch.cuda.set_rng_state_all(cuda_rng)
        trainer.callbacks, trainer.train_forward = callbacks, forward
        model.train(was_training)
        if state is None:
            del trainer.state
        else:
            trainer.state = state
