"""Live metrics of a run for the dashboard: only the lines appended since the last refresh are read
and parsed, and each series is kept as a NumPy array ready to downsample and plot."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.runs.streams import MetricsReader

FIELDS = ("step", "epoch", "time", "loss", "acc", "lr", "backbone_lr", "grad_norm", "samples_per_s", "epoch_time")


class LiveMetrics:
    def __init__(self, path: Path):
        self.reader = MetricsReader(path)
        self.arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self.lines = 0

    def refresh(self) -> int:
        """Read what was appended since the last call; returns the number of new lines."""
        rows = self.reader.read_new()
        if rows and rows[0].get("__reset__"):      # the file was rewritten by a resume
            self.arrays, self.lines, rows = {}, 0, rows[1:]
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in rows:
            groups.setdefault((row.get("split", "train"), row.get("kind", "step")), []).append(row)
        for key, group in groups.items():
            new = {f: np.array([row.get(f, np.nan) for row in group], dtype=float) for f in FIELDS}
            old = self.arrays.get(key)
            self.arrays[key] = new if old is None else {f: np.concatenate([old[f], new[f]]) for f in FIELDS}
        self.lines += len(rows)
        return len(rows)

    def rows(self, max_per_series: int = 2000) -> list[dict]:
        """The rows read so far, as metrics rows (for the diagnosis); missing fields are left out. A
        long series is thinned to evenly spaced rows plus its extremes (the largest loss and gradient
        norm, any non-finite loss), so a 100,000-line run costs milliseconds, not seconds."""
        rows = []
        for (split, kind), columns in self.arrays.items():
            n = len(columns["step"])
            keep = np.arange(n)
            if n > max_per_series:
                loss, grad = columns["loss"], columns["grad_norm"]
                extremes = [np.flatnonzero(~np.isfinite(loss))]
                extremes += [[int(np.nanargmax(a))] for a in (loss, grad) if np.isfinite(a).any()]
                keep = np.unique(np.concatenate([np.linspace(0, n - 1, max_per_series).astype(int), *extremes]))
            values = {name: columns[name][keep].tolist() for name in FIELDS}
            for i in range(len(keep)):
                row = {"split": split, "kind": kind}
                for name in FIELDS:
                    value = values[name][i]
                    if value == value or name == "loss":      # a NaN loss is a fact; a NaN elsewhere, absence
                        row[name] = int(value) if name in ("step", "epoch") else value
                rows.append(row)
        return rows

    def series(self, split: str, kind: str, field: str) -> tuple[np.ndarray, np.ndarray]:
        columns = self.arrays.get((split, kind))
        if columns is None:
            return np.array([]), np.array([])
        return columns["step"], columns[field]

    def last(self, split: str, kind: str, field: str) -> float | None:
        """The latest line's value, None when it has none (as in rows(), only a NaN loss is a value)."""
        _, values = self.series(split, kind, field)
        if not len(values) or (field != "loss" and np.isnan(values[-1])):
            return None
        return float(values[-1])

    def steps_per_second(self, window: int = 20) -> float | None:
        """Recent training speed from the step lines' timestamps (for the ETA)."""
        columns = self.arrays.get(("train", "step"))
        if columns is None or len(columns["step"]) < 2:
            return None
        steps, times = columns["step"][-window:], columns["time"][-window:]
        if times[-1] - times[0] <= 0 or time.time() - times[-1] > 60:
            return None
        return float((steps[-1] - steps[0]) / (times[-1] - times[0]))
