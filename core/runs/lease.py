"""One process trains a run at a time: an exclusive OS file lock (flock) on the run's lease file,
held by the training process for as long as it lives and released by the kernel however it ends
(a kill -9 included), so a lease is never left stale.

Status files cannot give this guarantee: two resumes a second apart, or two servers on one runs
folder, both read "stopped" before either writes "running". The lock is taken before anything is
written, so the second start fails with the holder's host and pid and changes nothing.
(flock is per host on most network file systems: servers on different machines sharing an NFS runs
folder are not protected.)
"""
from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from core.runs.states import HOST, InvalidTransition

ALREADY_RUNNING_EXIT = 3     # the worker's exit code when another process holds the lease


class LeaseHeld(InvalidTransition):
    """Another process holds the run's lease; the message names it."""


class RunLease:
    def __init__(self, path: Path, run_id: str = ""):
        self.path, self.run_id = Path(path), run_id
        self.fd: int | None = None

    def acquire(self, wait_s: float = 1.0) -> "RunLease":
        """Take the lease or raise LeaseHeld. Waits briefly, because `holder()` probes the lock for a
        few microseconds and must not make a real start fail."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LeaseHeld(f"run {self.run_id} is already running on {holder_text(self.path)}") from None
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{HOST} pid {os.getpid()}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)       # closing the descriptor releases the lock
            self.fd = None

    def __enter__(self) -> "RunLease":
        return self.acquire()

    def __exit__(self, *_) -> None:
        self.release()


def holder_text(path: Path) -> str:
    try:
        return Path(path).read_text().strip() or "another process"
    except OSError:
        return "another process"


def lease_holder(path: Path) -> str | None:
    """'HOST pid N' when a process holds the lease, else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder_text(path)
    finally:
        os.close(fd)      # releases the probe's lock, if it got one
    return None


def check_not_running(path: Path, run_id: str) -> None:
    """Raise LeaseHeld when a process trains the run now."""
    holder = lease_holder(path)
    if holder is not None:
        raise LeaseHeld(f"run {run_id} is already running on {holder}")
