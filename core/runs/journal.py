"""The change journal: the ids of runs whose state (or tags, or test accuracy) changed, one per line, in
the runs folder, so that every process listing the folder re-reads just those runs.

Every store write that changes what a listing shows appends the id; heartbeats do not (a running run
is re-read on every listing anyway). Appending is best effort: a lost line is caught by the deep
check that each listing makes on a rotating share of the runs.
"""
from __future__ import annotations

import os
from pathlib import Path

from core.runs.layout import CHANGES_FILE

JOURNAL_LIMIT_BYTES = 1 << 20   # the journal starts over beyond this size


class ChangeJournal:
    """One reader's position in the runs folder's journal, and the appending every writer does."""

    def __init__(self, root: Path):
        self.path = Path(root) / CHANGES_FILE
        self.offset: int | None = None      # None until the reader starts (skip_to_end)

    def announce(self, run_id: str) -> None:
        try:
            with open(self.path, "ab", buffering=0) as handle:
                handle.write(f"{run_id}\n".encode())      # one short O_APPEND write: never interleaved
        except OSError:
            pass

    def key(self) -> tuple | None:
        """Changes whenever a line is appended (or the journal is started over): one stat."""
        try:
            journal = os.stat(self.path)
        except FileNotFoundError:
            return None
        return journal.st_ino, journal.st_size

    def skip_to_end(self) -> None:
        """Start reading from now on: a new process checks every run once anyway."""
        try:
            self.offset = os.stat(self.path).st_size
        except FileNotFoundError:
            self.offset = 0

    def changed_runs(self) -> set[str] | None:
        """Run ids announced since the last call; None when the journal was removed or truncated
        (then every run must be checked)."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                if size < self.offset:
                    self.offset = 0
                    return None
                handle.seek(self.offset)
                chunk = handle.read()
        except FileNotFoundError:
            missing, self.offset = self.offset > 0, 0
            return None if missing else set()
        end = chunk.rfind(b"\n") + 1                       # a line being written waits for next time
        self.offset += end
        if self.offset > JOURNAL_LIMIT_BYTES:
            # Start the journal over; every process that reads it next checks all its runs once.
            os.truncate(self.path, 0)
            self.offset = 0
        return set(chunk[:end].decode(errors="replace").split())
