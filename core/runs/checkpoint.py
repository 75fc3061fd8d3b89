"""Checkpoints: the one place that saves, loads and turns them back into models.

A checkpoint is a dict of tensors and plain Python values, so it loads with weights_only=True (a
checkpoint is data, never code). It carries what rebuilds the model (config, classes, input shape,
mean/std), so `load_model(path)` needs nothing but the file. The weights are always the plain
module's: a torch.compile or DDP wrapper's prefixes (`_orig_mod.`, `module.`) never reach a file.

Schema versions: 1 had no version key and kept the early-stopping and best-checkpoint state in
"loop"; 2 keeps each callback's own state under "callbacks". Version 1 files are upgraded on load.
"""
from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from core.runs.files import TEMP_SUFFIX, disk_error

CHECKPOINT_SCHEMA_VERSION = 2
REQUIRED_KEYS = ("model", "config", "classes", "input_shape", "mean", "std", "loop")
RESUME_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "callbacks", "rng")   # not in best.pt
LEGACY_PICKLE_START = b"\x80\x02\x8a\x0a"   # torch.save before 1.6: a pickle protocol 2 magic number


def plain_module(model: nn.Module) -> nn.Module:
    """The module under a torch.compile (OptimizedModule) or DDP / DataParallel wrapper."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def save_checkpoint(state: dict, path: Path) -> None:
    """torch.save to a temp file beside `path`, fsync, then os.replace: never half a checkpoint.
    A failed write (a full disk) removes its temp file and raises."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as handle:
            torch.save({**state, "schema_version": CHECKPOINT_SCHEMA_VERSION}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        cause = disk_error(error)
        if cause is not None and not isinstance(error, OSError):
            raise OSError(cause.errno, cause.strerror, str(path)) from error   # say what filled up
        raise


class UnreadableCheckpoint(ValueError):
    """A file load_checkpoint will not use, and why (a ValueError: callers that predate it catch that)."""


def load_checkpoint(path: Path, device="cpu") -> dict:
    """A Trainboard checkpoint of any schema version, upgraded to the current one; UnreadableCheckpoint with
    the reason for anything else (a pickle with code in it, another program's file, a torn file, bytes
    that fail the archive's checksums)."""
    path = Path(path)
    # Any other file than a zip archive is left to torch.load: its refusal says more (a pickle with
    # code in it: nothing in it ran).
    damage = _archive_damage(path) if zipfile.is_zipfile(path) else None
    if damage:
        raise UnreadableCheckpoint(f"{path} is not a readable Trainboard checkpoint: it {damage}")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a file it then refuses: noise beside the reason.
            warnings.simplefilter("ignore", UserWarning)
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as error:
        raise UnreadableCheckpoint(f"{path} is not a readable Trainboard checkpoint: the safe loader refused "
                                   f"it ({unpickler_reason(error)}), so nothing in it ran") from None
    except Exception as error:
        first = str(error).strip().splitlines()[0].split(". ")[0][:200] if str(error).strip() else ""
        raise UnreadableCheckpoint(f"{path} is not a readable Trainboard checkpoint "
                                   f"({type(error).__name__}{': ' + first if first else ''})") from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise UnreadableCheckpoint(f"{path} is not a Trainboard checkpoint (it lacks the model, config or "
                                   "data description)")
    version = checkpoint.get("schema_version", 1)
    if not isinstance(version, int) or version > CHECKPOINT_SCHEMA_VERSION:
        raise UnreadableCheckpoint(f"{path} was written by a newer Trainboard (checkpoint schema {version}; "
                                   f"this version reads up to {CHECKPOINT_SCHEMA_VERSION})")
    if version == 1:
        checkpoint = _upgrade_from_1(checkpoint)
    return checkpoint


def torch_file_damage(path: Path) -> str | None:
    """What is wrong with a file torch.save wrote, found without unpickling it: not torch.save's zip
    archive (nor a pre-1.6 pickle), or an entry whose bytes fail the archive's CRC-32. torch.load checks
    neither: torn tensor bytes load silently, and predict garbage or train to NaN. It reads the whole
    file: ~25-35 ms for 45 MB (resnet18) on a 2-core VM, where torch.load then takes ~60-75 ms."""
    try:
        if zipfile.is_zipfile(path):
            return _archive_damage(path)
        with open(path, "rb") as handle:
            legacy = handle.read(len(LEGACY_PICKLE_START)) == LEGACY_PICKLE_START
        return None if legacy else "is not a PyTorch weights file (corrupt, or another file under its name)"
    except OSError as error:
        return f"is corrupt ({type(error).__name__}: {str(error)[:120]})"


def _archive_damage(path: Path) -> str | None:
    """torch_file_damage of a file known to be a zip archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                return "is not a PyTorch weights file (a zip archive without torch's data.pkl)"
            torn = archive.testzip()
        return f"is corrupt (its entry {torn} fails its checksum)" if torn else None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        return f"is corrupt ({type(error).__name__}: {str(error)[:120]})"


def unpickler_reason(error: Exception) -> str:
    """What torch's weights-only unpickler refused, without the rest of its message: that goes on to
    advise loading with weights_only=False, the one thing never to do with a file someone handed us."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "Check the documentation", "Please file",
                                         "(1)", "(2)")) and "weights_only" not in line:
            return line.split(". ")[0].rstrip(".")[:160]
    return "a pickle the safe loader does not accept"


def restore_best_from_latest(latest: Path, best: Path) -> bool:
    """Crash repair, run before a resume. An epoch ends with its metrics lines, then latest.pt (the
    commit), then best.pt: a crash between the last two leaves latest.pt recording a best epoch that
    best.pt does not hold. latest.pt then holds exactly that epoch's weights, so best.pt is rebuilt
    from it. Returns True when it was."""
    checkpoint = load_checkpoint(latest)
    loop = checkpoint["loop"]
    recorded = checkpoint.get("callbacks", {}).get("Checkpointer", {}).get("best_epoch")
    if recorded is None or recorded != loop["epoch"] or loop["batch_in_epoch"]:
        return False
    if Path(best).exists():
        try:
            if load_checkpoint(best)["loop"]["epoch"] == recorded:
                return False
        except ValueError:
            pass          # a broken best.pt is rebuilt too
    save_checkpoint({k: v for k, v in checkpoint.items() if k not in RESUME_ONLY_KEYS}, best)
    return True


def _upgrade_from_1(checkpoint: dict) -> dict:
    """Version 1 kept one best value, shared by early stopping and the best checkpoint, in "loop"."""
    loop = checkpoint["loop"]
    monitor = {"best": loop.get("best_value"), "best_epoch": loop.get("best_epoch"),
               "since_best": loop.get("epochs_without_improvement", 0)}
    return {**checkpoint, "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "callbacks": {"Checkpointer": dict(monitor), "EarlyStopping": dict(monitor)}}


def model_from_checkpoint(checkpoint: dict, device="cpu") -> nn.Module:
    """The checkpoint's model, built from its own description, weights loaded, in eval mode."""
    from core.models.registry import build_model
    config = checkpoint["config"]
    model = build_model(config["model"], *checkpoint["input_shape"], len(checkpoint["classes"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"the checkpoint's weights do not fit a {config['model']} "
                         f"({str(error).splitlines()[0][:200]})") from None
    return model.to(device).eval()


def load_model(path: Path, device="cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode, checkpoint) from a checkpoint file: the one call that every reader of
    best.pt / latest.pt needs."""
    checkpoint = load_checkpoint(path, device="cpu")
    return model_from_checkpoint(checkpoint, device), checkpoint
