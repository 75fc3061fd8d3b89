"""Predictions of a run's checkpoint on a split, and their report, cached in the run folder.

In store.eval_dir(run_id, checkpoint, split):
  predictions.npz  probs [N, C] float32, labels [N] int64, index [N]
  report.json      core.metrics.classification_report + the checkpoint's fingerprint (size, mtime):
                   a new checkpoint makes the cache stale.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from core.augment import BatchPreprocessor, predict_logits
from core.checkpoint import load_checkpoint, model_from_checkpoint
from core.config import read_config_values
from core.data import load_dataset
from core.metrics import classification_report
from core.store import RunStore, atomic_write_bytes, atomic_write_json
from core.trainer import resolve_device


def _fingerprint(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@torch.inference_mode()
def predict_split(checkpoint: dict, split: str, batch_size: int = 512, device: str = "auto"):
    """(probs float32 [N, C], labels int64 [N], index int64 [N]) of a checkpoint on a split."""
    config, _ = read_config_values(checkpoint["config"])
    dataset = load_dataset(config)
    part = dataset.splits[split]
    target = resolve_device(device)
    model = model_from_checkpoint(checkpoint, target)
    prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"], device=target)
    probs, labels = [], []
    for images, y in part.batches(torch.arange(len(part)), batch_size):
        logits = predict_logits(model, prep(images.to(target), train=False), config.tta_flip)
        probs.append(torch.softmax(logits.float(), 1).cpu())
        labels.append(y.cpu())
    probs = torch.cat(probs).numpy() if probs else np.zeros((0, len(dataset.classes)), np.float32)
    labels = torch.cat(labels).numpy() if labels else np.zeros(0, np.int64)
    return probs.astype(np.float32), labels.astype(np.int64), np.arange(len(labels), dtype=np.int64)


def evaluate_run(store: RunStore, run_id: str, checkpoint: str = "best", split: str = "val",
                 device: str = "auto") -> tuple[dict, dict]:
    """(report, arrays) for a run's checkpoint on a split; computed once, then read from the cache
    until the checkpoint file changes."""
    folder = store.eval_dir(run_id, checkpoint, split)     # refuses other checkpoints and splits
    path = store.checkpoint_path(run_id, checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"run {run_id} has no {checkpoint}.pt yet (written at the end of each epoch)")
    fingerprint = _fingerprint(path)
    try:
        report = json.loads((folder / "report.json").read_text())
        if report.get("checkpoint") == fingerprint:
            with np.load(folder / "predictions.npz") as cached:
                return report, {name: cached[name] for name in ("probs", "labels", "index")}
    except (OSError, ValueError, KeyError):
        pass   # no cache, or a broken one: compute afresh
    loaded = load_checkpoint(path)
    probs, labels, index = predict_split(loaded, split, device=device)
    report = classification_report(probs, labels, loaded["classes"])
    report.update(checkpoint=fingerprint, run_id=run_id, checkpoint_name=checkpoint, split=split,
                  epoch=loaded["loop"]["epoch"], step=loaded["loop"]["step"])
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, probs=probs, labels=labels, index=index)
    atomic_write_bytes(folder / "predictions.npz", buffer.getvalue())
    atomic_write_json(folder / "report.json", report)      # written last: it marks the cache complete
    store.announce_change(run_id)          # the runs table shows the test accuracy
    return report, {"probs": probs, "labels": labels, "index": index}


__all__ = ["evaluate_run", "predict_split"]
