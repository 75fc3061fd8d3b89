"""JSON Lines streams of a run (metrics.jsonl, probes.jsonl): appended a whole line at a time, read
incrementally from a byte offset, and cut back to a checkpoint's step when a run resumes.

Readers keep only the lines that are records of their stream (is_metrics_row, is_probe_record): a
torn last line, a hand edit or another program's line is left out, never raised.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from core.runs.files import atomic_write_bytes


class JsonLinesReader:
    """Reads a JSON Lines stream incrementally from a byte offset; a partial last line waits for the
    next read (the writer may be mid-line), like TensorBoard's event reader. Only lines that
    `is_record` accepts are returned."""

    def __init__(self, path: Path, is_record):
        self.path = Path(path)
        self.offset = 0
        self.is_record = is_record

    def read_new(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self.offset:        # the file was truncated (a resume dropped lines)
                    self.offset = 0
                    return [{"__reset__": True}] + self.read_new()
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in chunk[:end].splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue   # a torn line left by a crash; the resume drops it from the file
                if self.is_record(row):
                    rows.append(row)     # anything else (a hand edit, another program's line) is left out
        return rows


class MetricsReader(JsonLinesReader):
    """metrics.jsonl's rows, read incrementally."""

    def __init__(self, path: Path):
        super().__init__(path, is_metrics_row)


METRIC_SPLITS, METRIC_KINDS = ("train", "val"), ("step", "epoch")


def is_metrics_row(row) -> bool:
    """A line readers can use: split and kind from their sets, a whole step (and epoch, when given),
    numbers elsewhere."""
    if not isinstance(row, dict) or row.get("split") not in METRIC_SPLITS or row.get("kind") not in METRIC_KINDS:
        return False
    whole = all(isinstance(row.get(key), int) and not isinstance(row.get(key), bool)
                for key in ("step", "epoch") if key == "step" or key in row)
    return whole and all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                         for key, value in row.items() if key not in ("split", "kind"))


def is_probe_record(record) -> bool:
    """A probes.jsonl line readers can use (its fields: core.training.probes): whole step and epoch, a layers
    object."""
    return (isinstance(record, dict) and isinstance(record.get("layers"), dict)
            and all(isinstance(record.get(key), int) and not isinstance(record.get(key), bool)
                    for key in ("step", "epoch")))


class JsonLinesWriter:
    """Appends one JSON object per line, flushed at once; fsync on demand (epoch ends). A write that
    fails (a full disk) takes its partial line back, so the file only ever holds whole lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.handle = open(path, "ab", buffering=0)

    def write(self, row: dict) -> None:
        data = memoryview((json.dumps(row, separators=(",", ":")) + "\n").encode())
        start = self.handle.seek(0, os.SEEK_END)
        try:
            while data:      # an unbuffered write may write only part of its bytes
                data = data[self.handle.write(data):]
        except BaseException as error:
            os.ftruncate(self.handle.fileno(), start)
            if isinstance(error, OSError) and error.filename is None:
                raise OSError(error.errno, error.strerror, str(self.path)) from error   # name the file
            raise

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        if not self.handle.closed:
            self.sync()
            self.handle.close()


class MetricsWriter(JsonLinesWriter):
    """metrics.jsonl's appender (a class of its own, so fault injection can aim at it alone)."""


def read_jsonl_lines(path: Path) -> list[dict]:
    return MetricsReader(path).read_new()


def truncate_metrics(path: Path, keep_until_step: int | None) -> int:
    """Drop a torn last line, lines that are not metrics rows, and lines past `keep_until_step` (work
    lost with the crashed process).
    Returns how many lines were dropped. Atomic: a crash here leaves the old file or the new one."""
    return truncate_jsonl(path, keep_until_step, is_metrics_row)


def truncate_probes(path: Path, keep_until_step: int | None) -> int:
    """truncate_metrics for probes.jsonl: a resume records again the probes past its checkpoint."""
    return truncate_jsonl(path, keep_until_step, is_probe_record)


def truncate_jsonl(path: Path, keep_until_step: int | None, is_record) -> int:
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    kept, dropped = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            dropped += 1
            continue
        if not is_record(row):
            dropped += 1
            continue
        if keep_until_step is not None and row["step"] > keep_until_step:
            dropped += 1
            continue
        kept.append(line)
    new = b"".join(line + b"\n" for line in kept)
    if new != data:
        atomic_write_bytes(path, new)
    return dropped
