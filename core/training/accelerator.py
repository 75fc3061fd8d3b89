"""How a run uses its device: which device, mixed precision, torch.compile, the model's memory format.
One place that the trainer, the LR finder, evaluation and inference all ask, so they agree.

Everything that speeds up a GPU without changing the result is decided here, on CUDA only: bf16 or
fp16 autocast, channels_last and cudnn.benchmark for conv nets, and compiling the training forward.
"""
from __future__ import annotations

import gc

import torch

# compile auto: CUDA graphs (reduce-overhead) pay off where a step is launch-bound: a small model at a
# small batch (resnet18 at batch 128 on an H100: ~13 ms per step, mostly kernel launches).
CUDA_GRAPHS_MAX_PARAMS, CUDA_GRAPHS_MAX_BATCH = 30_000_000, 512
COMPILE_BACKEND = "inductor"        # tests swap in "eager": the wrapping and unwrapping without a compiler


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda")
    return torch.device("cpu")


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


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "off")


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


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The compiled module for the training forward (the plain `model` stays what checkpoints see)."""
    options = {"mode": mode} if COMPILE_BACKEND == "inductor" else {}
    return torch.compile(model, backend=COMPILE_BACKEND, **options)


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in model.modules())


def place_model(model: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, bool]:
    """(the model on `device`, whether it is channels_last). On CUDA, a conv net goes NHWC and cuDNN's
    autotuner is on: both cost nothing in accuracy."""
    channels_last = device.type == "cuda" and has_convolutions(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if channels_last:
        return model.to(device, memory_format=torch.channels_last), True
    return model.to(device), False


def free_cuda_memory() -> None:
    """Give back what a failed or finished allocation left cached (after an out-of-memory error)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
