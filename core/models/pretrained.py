"""ImageNet weights for the imagenet-* models: where torchvision keeps them, the launch check, loading.

The file is torchvision's own, under its own name, in the torch hub cache
($TORCH_HOME/hub/checkpoints/), so weights fetched by torchvision elsewhere are found here and the
other way round. Nothing is downloaded unless TRAINBOARD_DOWNLOAD_WEIGHTS=1: offline first, and a
launch check never waits on the network. The file is read with weights_only=True like any checkpoint.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.models.registry import model_spec
from core.runs.checkpoint import torch_file_damage, unpickler_reason

DOWNLOAD_ENV = "TRAINBOARD_DOWNLOAD_WEIGHTS"
TRUNCATED_BELOW = 0.9      # of torchvision's stated file size: a cheap check that catches a cut-off download


class PretrainedWeightsError(ValueError):
    """The ImageNet weights file is missing, unreadable or not the architecture's."""


def _weights_enum(model: str):
    import torchvision.models as tvm
    enum_name, member = model_spec(model).weights.split(".")
    return getattr(getattr(tvm, enum_name), member)


def weights_url(model: str) -> str:
    return _weights_enum(model).url


def weights_path(model: str) -> Path:
    """Where torchvision keeps (and looks for) the model's ImageNet weights."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights_url(model))


def downloads_allowed() -> bool:
    return os.environ.get(DOWNLOAD_ENV, "") == "1"


def weights_problem(model: str) -> str | None:
    """Why the model's weights file cannot be used, found cheaply (exists, readable, size); None when
    it looks right or will be downloaded at the start."""
    path, url = weights_path(model), weights_url(model)
    if not path.exists():
        if downloads_allowed():
            return None
        return (f"{model} needs torchvision's ImageNet weights file {path.name}, not found in {path.parent}: "
                f"download it from {url} into that folder (or set {DOWNLOAD_ENV}=1 where the network "
                f"allows, or pretrained=false)")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as error:
        return f"cannot read the ImageNet weights file {path}: {error.strerror or error}"
    expected = _weights_enum(model).meta.get("_file_size")     # MiB, as torchvision states it
    if expected and size < TRUNCATED_BELOW * expected * 1024**2:
        return (f"the ImageNet weights file {path} is truncated ({size / 1024**2:.1f} MiB, expected about "
                f"{expected:.1f} MiB): delete it and download it again from {url}")
    damage = torch_file_damage(path)
    if damage:
        return f"the ImageNet weights file {path} {damage}: delete it and download it again from {url}"
    return None


def load_imagenet_weights(model_name: str, model) -> None:
    """Load the ImageNet weights into every layer but the head (which is new, for this data's classes).
    PretrainedWeightsError names the file when it is missing, corrupt, truncated or another model's."""
    import torch
    path, url = weights_path(model_name), weights_url(model_name)
    if not path.exists() and downloads_allowed():
        from torch.hub import download_url_to_file
        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), progress=False)
    problem = weights_problem(model_name)
    if problem:
        raise PretrainedWeightsError(problem)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # Never torch's own text: it advises loading with weights_only=False.
        reason = (unpickler_reason(error) if "weights_only" in str(error) or "Unpickl" in type(error).__name__
                  else (str(error).strip().splitlines() or [type(error).__name__])[0].split(". ")[0][:160])
        raise PretrainedWeightsError(f"the ImageNet weights file {path} is corrupt or truncated ({reason}): "
                                     f"delete it and download it again from {url}") from None
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path} is not a state dict of {model_name}")
    head = model_spec(model_name).head + "."
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise PretrainedWeightsError(f"{path} does not fit {model_name} "
                                     f"({str(error).splitlines()[1:2] or error})") from None
    # Files saved before BatchNorm counted its batches lack num_batches_tracked: harmless.
    missing = [k for k in missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise PretrainedWeightsError(f"{path} does not fit {model_name}: "
                                     f"{len(missing)} weights missing, {len(unexpected)} unexpected "
                                     f"(e.g. {(missing or unexpected)[0]})")
