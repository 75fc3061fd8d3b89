"""Files derived from a checkpoint (an evaluation's predictions and report, an export's models; next
embeddings, Grad-CAM maps, monitoring references): where each lives in the run folder, whether it is
still fresh, and how it is written.

One freshness rule for all of them: a set of derived files belongs to the checkpoint it was made
from, named by that checkpoint's identity (its size and mtime) in the set's record, the JSON file
written last. Once best.pt or latest.pt is written again (another epoch, a resume) the identity
differs and everything derived from the old file reads as stale. The identity is taken before the
work starts, so a checkpoint replaced meanwhile makes the result stale at once. Every file is
written through a temp file and a rename, and all of them live inside the run folder: deleting a run
deletes them.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from core.runs.files import atomic_write_bytes, atomic_write_json, temp_path_beside
from core.runs.layout import CHECKPOINTS, RunLayout

EVAL_SPLITS = ("val", "test")         # the splits a checkpoint is evaluated on
QUANTIZE_KINDS = ("dynamic", "static")   # int8 exports: weights only, or weights and activations
# What predict / serve can run a run's model with, and the export file each reads (None: best.pt).
SERVING_BACKENDS = {"torch": None, "onnx": "onnx", "onnx-int8": "onnx-int8-static"}


@dataclass(frozen=True)
class DerivedKind:
    """One kind of derived files: each file's path in the run folder ({checkpoint} and the other
    parts filled in), the values each part may take, and which file is the record."""
    name: str
    files: dict[str, str]
    parts: dict[str, tuple[str, ...]]
    record: str = "report"


EVALUATION = DerivedKind(
    "evaluation", {"predictions": "eval/{checkpoint}-{split}/predictions.npz",
                   "report": "eval/{checkpoint}-{split}/report.json"},
    parts={"checkpoint": CHECKPOINTS, "split": EVAL_SPLITS})
EMBEDDING_SPLITS = ("train", "val", "test")   # the projector maps any split
PROJECTIONS = ("pca", "tsne", "umap")
EMBEDDINGS = DerivedKind(
    "embeddings", {"arrays": "embeddings/{checkpoint}-{split}/features.npz",
                   "report": "embeddings/{checkpoint}-{split}/embeddings.json"},
    parts={"checkpoint": CHECKPOINTS, "split": EMBEDDING_SPLITS})
PROJECTION = DerivedKind(
    "projection", {"coords": "embeddings/{checkpoint}-{split}/{method}.npy",
                   "report": "embeddings/{checkpoint}-{split}/{method}.json"},
    parts={"checkpoint": CHECKPOINTS, "split": EMBEDDING_SPLITS, "method": PROJECTIONS})
EXPORT = DerivedKind(
    "export", {"onnx": "model.onnx", "onnx-int8-dynamic": "model.int8.onnx",
               "onnx-int8-static": "model.int8-static.onnx", "torchscript": "model.ts.pt", "report": "export.json"},
    parts={"checkpoint": ("best",)})


def checkpoint_identity(path: Path) -> dict:
    """What tells one writing of a checkpoint file from the next; FileNotFoundError without one."""
    stat = Path(path).stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class DerivedFiles:
    """The files of one kind derived from one checkpoint of a run."""

    def __init__(self, layout: RunLayout, run_id: str, kind: DerivedKind, checkpoint: str = "best", **parts):
        self.kind, self.parts = kind, {"checkpoint": checkpoint, **parts}
        for part, allowed in kind.parts.items():
            if self.parts.get(part) not in allowed:
                raise ValueError(f"{part} must be one of {', '.join(allowed)}, got {self.parts.get(part)!r}")
        self.run_dir = layout.run_dir(run_id)
        self.checkpoint = layout.checkpoint_path(run_id, checkpoint)

    def path(self, name: str) -> Path:
        if name not in self.kind.files:
            raise ValueError(f"{self.kind.name} file must be one of {', '.join(self.kind.files)}, got {name!r}")
        return self.run_dir / self.kind.files[name].format(**self.parts)

    def identity(self) -> dict:
        """The checkpoint's identity now: take it before the work starts, give it to write_record."""
        return checkpoint_identity(self.checkpoint)

    def read_record(self) -> dict | None:
        """The record as it is on disk, fresh or not (None: none, or not a JSON object)."""
        try:
            record = json.loads(self.path(self.kind.record).read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def record(self) -> dict | None:
        """The record when it belongs to the checkpoint as it is now; None when there is none, it is
        stale, or the checkpoint is gone."""
        record = self.read_record()
        try:
            fresh = record is not None and record.get("checkpoint") == self.identity()
        except FileNotFoundError:
            return None
        return record if fresh else None

    def is_fresh(self, name: str) -> bool:
        """Whether file `name` exists and was written with the checkpoint as it is now."""
        record = self.record()
        return record is not None and name in record.get("files", ()) and self.path(name).exists()

    def write_bytes(self, name: str, data: bytes) -> Path:
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return path

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temp path beside file `name` for a writer that wants a path (an exporter): renamed over
        the file when the block ends without an error, removed when it does not."""
        path = self.path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_beside(path)
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_record(self, record: dict, identity: dict, files: list[str]) -> dict:
        """Write the record last: it names the checkpoint the set was made from and the files written
        with it, and so marks them complete."""
        record = {**record, "checkpoint": identity, "files": list(files)}
        path = self.path(self.kind.record)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, record)
        return record


def evaluation_files(layout: RunLayout, run_id: str, checkpoint: str, split: str) -> DerivedFiles:
    """A checkpoint's predictions on a split and their report (core.analysis.evaluate)."""
    return DerivedFiles(layout, run_id, EVALUATION, checkpoint, split=split)


def export_files(layout: RunLayout, run_id: str) -> DerivedFiles:
    """best.pt as ONNX, int8 ONNX, TorchScript, and the export's report (core.serving.export)."""
    return DerivedFiles(layout, run_id, EXPORT, "best")


def embedding_files(layout: RunLayout, run_id: str, checkpoint: str, split: str) -> DerivedFiles:
    """A checkpoint's features and predictions on a split (core.analysis.embeddings)."""
    return DerivedFiles(layout, run_id, EMBEDDINGS, checkpoint, split=split)


def projection_files(layout: RunLayout, run_id: str, checkpoint: str, split: str, method: str) -> DerivedFiles:
    """Those features in 2-D by a method (core.analysis.projection)."""
    return DerivedFiles(layout, run_id, PROJECTION, checkpoint, split=split, method=method)
