"""What a checkpoint's model makes of a split: the features its head reads (the registry's embedding
module, flattened) and its class probabilities, in one pass. The projector maps the features to 2-D;
neighbours in feature space are the samples the model finds alike.

The probabilities come from the same plain forward as the features (no test-time flip), so each
point's prediction is the one its features lead to. Computed once per checkpoint and split, and kept
as derived files of that checkpoint (core.runs.derived): embeddings/<ckpt>-<split>/features.npz.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch

from core.config import read_config_values
from core.data.augment import BatchPreprocessor
from core.data.datasets import load_dataset
from core.models.registry import model_spec
from core.runs.checkpoint import load_checkpoint, model_from_checkpoint
from core.runs.derived import embedding_files
from core.training.accelerator import resolve_device

BATCH = 512
ARRAYS = ("features", "probs", "labels", "index")


class NoEmbedding(ValueError):
    """A model without an embedding layer in the registry, or a split the run does not have."""


@torch.inference_mode()
def embed_split(checkpoint: dict, split: str, device: str = "auto",
                on_progress: Callable[[int, int], None] | None = None) -> dict:
    """{"features" float32 [N, D], "probs" float32 [N, C], "labels" int64 [N], "index" int64 [N]} of a
    checkpoint on a split; index is each sample's position in the split (a streamed folder leaves out
    files it cannot read)."""
    config, _ = read_config_values(checkpoint["config"])
    spec = model_spec(config.model)
    if not spec.embedding:
        raise NoEmbedding(f"{config.model} names no embedding layer in the registry: nothing to project")
    dataset = load_dataset(config)
    if split not in dataset.splits or not len(dataset.splits[split]):
        raise NoEmbedding(f"run's data has no {split} split (its splits: "
                          f"{', '.join(s for s, part in dataset.splits.items() if len(part))})")
    part = dataset.splits[split]
    target = resolve_device(device)
    model = model_from_checkpoint(checkpoint, target).eval()
    prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"], device=target)
    batches = ((prep(images.to(target), train=False), y, positions)
               for images, y, positions in part.positioned_batches(torch.arange(len(part)), BATCH))
    arrays = features_and_probs(model, spec.embedding, batches, len(part), on_progress)
    if not len(arrays["labels"]):
        raise NoEmbedding(f"none of the {split} split's images could be read")
    return arrays


@torch.inference_mode()
def features_and_probs(model: torch.nn.Module, layer: str, batches, total: int,
                       on_progress: Callable[[int, int], None] | None = None) -> dict:
    """One pass of normalised (inputs, labels, positions) batches: `layer`'s output flattened (a forward
    hook, removed on any path) and the model's probabilities, as the arrays embed_split returns."""
    captured, parts = [], {name: [] for name in ARRAYS}
    hook = model.get_submodule(layer).register_forward_hook(
        lambda module, inputs, output: captured.append(output.flatten(1).float().cpu()))
    try:
        done = 0
        for inputs, labels, positions in batches:
            logits = model(inputs)
            parts["features"].append(captured.pop())
            parts["probs"].append(torch.softmax(logits.float(), 1).cpu())
            parts["labels"].append(labels.cpu())
            parts["index"].append(positions.cpu())
            done += len(labels)
            if on_progress:
                on_progress(done, total)
    finally:
        hook.remove()
    if not parts["labels"]:
        return {"features": np.zeros((0, 0), np.float32), "probs": np.zeros((0, 0), np.float32),
                "labels": np.zeros(0, np.int64), "index": np.zeros(0, np.int64)}
    arrays = {name: torch.cat(chunks).numpy() for name, chunks in parts.items()}
    return {name: arrays[name].astype(np.float32 if name in ("features", "probs") else np.int64) for name in ARRAYS}


def embeddings(store, run_id: str, checkpoint: str = "best", split: str = "val", device: str = "auto",
               on_progress: Callable[[int, int], None] | None = None) -> tuple[dict, dict]:
    """(arrays, record) of a run's checkpoint on a split: from the cache while the checkpoint is the
    one they were made from, else computed and kept. FileNotFoundError before the checkpoint exists;
    NoEmbedding (and nothing cached) for a model or split that has none."""
    files = embedding_files(store, run_id, checkpoint, split)
    path = store.checkpoint_path(run_id, checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"run {run_id} has no {checkpoint}.pt yet (written at the end of each epoch)")
    identity = files.identity()
    record = files.record()
    if record is not None:
        try:
            with np.load(files.path("arrays")) as cached:
                return {name: cached[name] for name in ARRAYS}, record
        except (OSError, ValueError, KeyError):
            pass      # a broken cache: computed afresh
    loaded = load_checkpoint(path)
    arrays = embed_split(loaded, split, device, on_progress)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    files.write_bytes("arrays", buffer.getvalue())
    record = files.write_record({"run_id": run_id, "checkpoint_name": checkpoint, "split": split,
                                 "points": len(arrays["labels"]), "dimensions": int(arrays["features"].shape[1]),
                                 "classes": list(loaded["classes"]), "epoch": loaded["loop"]["epoch"]},
                                identity, files=["arrays"])
    return arrays, record
