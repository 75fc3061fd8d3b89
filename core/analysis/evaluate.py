"""Predictions of a run's checkpoint on a split, and their report, cached in the run folder; which
predictions to look at (a confusion cell, the mistakes) and their tiles.

The cache is core.runs.derived's evaluation_files(store, run_id, checkpoint, split):
  predictions.npz  probs [N, C] float32, labels [N] int64, index [N]
  report.json      core.analysis.metrics.classification_report, written last with the checkpoint's
                   identity: a new checkpoint makes the cache stale.
"""
from __future__ import annotations

import io
import os

import numpy as np
import torch

from core.analysis.gallery import Tile
from core.analysis.metrics import classification_report
from core.config import read_config_values
from core.data.augment import BatchPreprocessor, predict_logits
from core.data.datasets import load_dataset
from core.data.folders import DatasetError
from core.runs.checkpoint import load_checkpoint, model_from_checkpoint
from core.runs.derived import evaluation_files
from core.runs.store import RunStore
from core.training.accelerator import resolve_device


@torch.inference_mode()
def predict_split(checkpoint: dict, split: str, batch_size: int = 512, device: str = "auto"):
    """(probs float32 [N, C], labels int64 [N], index int64 [N]) of a checkpoint on a split; index is
    each prediction's position in the split (a streamed folder leaves unreadable files out)."""
    config, _ = read_config_values(checkpoint["config"])
    dataset = load_dataset(config)
    part = dataset.splits[split]
    target = resolve_device(device)
    model = model_from_checkpoint(checkpoint, target)
    prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"], device=target)
    probs, labels, index = [], [], []
    for images, y, positions in part.positioned_batches(torch.arange(len(part)), batch_size):
        logits = predict_logits(model, prep(images.to(target), train=False), config.tta_flip)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        labels.append(y.cpu())
        index.append(positions.cpu())
    if not probs:
        return np.zeros((0, len(dataset.classes)), np.float32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return (torch.cat(probs).numpy().astype(np.float32), torch.cat(labels).numpy().astype(np.int64),
            torch.cat(index).numpy().astype(np.int64))


def evaluate_run(store: RunStore, run_id: str, checkpoint: str = "best", split: str = "val",
                 device: str = "auto") -> tuple[dict, dict]:
    """(report, arrays) for a run's checkpoint on a split; computed once, then read from the cache
    until the checkpoint file changes."""
    cache = evaluation_files(store, run_id, checkpoint, split)     # refuses other checkpoints and splits
    path = store.checkpoint_path(run_id, checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"run {run_id} has no {checkpoint}.pt yet (written at the end of each epoch)")
    identity = cache.identity()
    report = cache.record()
    if report is not None:
        try:
            with np.load(cache.path("predictions")) as cached:
                return report, {name: cached[name] for name in ("probs", "labels", "index")}
        except (OSError, ValueError, KeyError):
            pass   # a broken cache: compute afresh
    loaded = load_checkpoint(path)
    try:
        probs, labels, index = predict_split(loaded, split, device=device)
    except DatasetError as error:      # the data moved or was deleted since the run trained on it
        raise DatasetError(f"the {split} split is read from the data run {run_id} trained on, and that cannot be "
                           f"loaded now: {error}. Put the data back where it was; the Predict page needs only "
                           "the checkpoint") from None
    report = classification_report(probs, labels, loaded["classes"])
    report.update(run_id=run_id, checkpoint_name=checkpoint, split=split,
                  epoch=loaded["loop"]["epoch"], step=loaded["loop"]["step"])
    buffer = io.BytesIO()
    np.savez(buffer, probs=probs, labels=labels, index=index)
    cache.write_bytes("predictions", buffer.getvalue())
    report = cache.write_record(report, identity, files=["predictions"])
    store.announce_change(run_id)          # the runs table shows the test accuracy
    return report, {"probs": probs, "labels": labels, "index": index}


def most_confused_cell(confusion) -> tuple[int, int]:
    """(true, predicted) of the largest off-diagonal count of a confusion matrix; (0, 0) without
    mistakes or with one class."""
    matrix = np.array(confusion, dtype=np.int64)
    if len(matrix) < 2:
        return 0, 0
    np.fill_diagonal(matrix, 0)
    true, predicted = np.unravel_index(matrix.argmax(), matrix.shape)
    return (int(true), int(predicted)) if matrix[true, predicted] else (0, 0)


def cell_rows(arrays: dict, true_class: int, predicted_class: int) -> np.ndarray:
    """Rows of the predictions in one confusion cell, the most confident (in the predicted class) first."""
    probs, labels = arrays["probs"], arrays["labels"]
    rows = np.flatnonzero((labels == true_class) & (probs.argmax(1) == predicted_class))
    return rows[np.argsort(-probs[rows, predicted_class], kind="stable")]


def misclassified_rows(arrays: dict) -> np.ndarray:
    """Rows of the wrong predictions, the most confident first."""
    probs, labels = arrays["probs"], arrays["labels"]
    rows = np.flatnonzero(probs.argmax(1) != labels)
    return rows[np.argsort(-probs[rows].max(1), kind="stable")]


def sample_image(split, position: int) -> np.ndarray:
    """One sample of a split as uint8 [H, W] (one channel) or [H, W, 3]."""
    image = split.sample(int(position))
    image = image.numpy() if hasattr(image, "numpy") else np.asarray(image)
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def sample_name(split, position: int, root: str | None = None) -> str:
    """A sample's file, relative to the data folder (folder datasets), else its index in the split
    ('#17'): digits and the standard sets have no files."""
    files = getattr(split, "files", None)
    if not files:
        return f"#{int(position)}"
    path = files[int(position)]
    if root:
        relative = os.path.relpath(path, root)
        if not relative.startswith(".."):
            return relative
    return os.path.basename(path)


def prediction_tiles(rows, arrays: dict, classes: list[str], split, *, names: bool = False,
                     root: str | None = None, with_true_class: bool = True, picture=None) -> list[Tile]:
    """Tiles of predictions: 'true → predicted' (the arrow kept with the predicted class when the line
    wraps; left out for one confusion cell, whose classes are known) and the confidence in the
    predicted class; a file name or index when asked. `picture(position, predicted)` draws a tile's
    image instead of the sample itself (the Evaluate page's Grad-CAM)."""
    probs, labels, index = arrays["probs"], arrays["labels"], arrays["index"]
    tiles = []
    for row in rows:
        position, true, predicted = int(index[row]), int(labels[row]), int(probs[row].argmax())
        confidence = f"{probs[row, predicted]:.2f}"
        name = sample_name(split, position, root)
        lines = (f"{classes[true]} →\u00a0{classes[predicted]}", confidence) if with_true_class else (confidence,)
        tooltip = f"{name}: true {classes[true]}, predicted {classes[predicted]} ({confidence})"
        image = picture(position, predicted) if picture else sample_image(split, position)
        tiles.append(Tile(image, lines, tooltip, name if names else None))
    return tiles


__all__ = ["cell_rows", "evaluate_run", "misclassified_rows", "most_confused_cell", "predict_split",
           "prediction_tiles", "sample_image", "sample_name"]
