"""Run states: the one named set, the transitions allowed between them, and how a reader tells a
live run from one whose process died.

    created ──> queued ──> running ──> completed | stopped | failed
       └───────────────────┘  (the CLI trains without a queue)
    queued, running ──> interrupted   (the owning process died, or its heartbeat went stale)
    stopped, interrupted, failed ──> queued | running   (resume)

`unreadable` is never written: readers show it for a run folder whose files cannot be understood.
"""
from __future__ import annotations

import os
import socket
import time

CREATED, QUEUED, RUNNING = "created", "queued", "running"
COMPLETED, FAILED, STOPPED, INTERRUPTED = "completed", "failed", "stopped", "interrupted"
UNREADABLE = "unreadable"

ACTIVE_STATES = frozenset({QUEUED, RUNNING})
TERMINAL_STATES = frozenset({COMPLETED, FAILED, STOPPED, INTERRUPTED})
RESUMABLE_STATES = frozenset({STOPPED, INTERRUPTED, FAILED})
WRITTEN_STATES = ACTIVE_STATES | TERMINAL_STATES | {CREATED}
SHOWN_STATES = WRITTEN_STATES | {UNREADABLE}

TRANSITIONS: dict[str, frozenset] = {
    CREATED: frozenset({QUEUED, RUNNING}),
    QUEUED: frozenset({RUNNING, STOPPED, FAILED, INTERRUPTED}),
    RUNNING: frozenset({COMPLETED, FAILED, STOPPED, INTERRUPTED}),
    STOPPED: frozenset({QUEUED, RUNNING}),
    INTERRUPTED: frozenset({QUEUED, RUNNING}),
    FAILED: frozenset({QUEUED, RUNNING}),
    COMPLETED: frozenset(),
}

HEARTBEAT_STALE_S = 10.0
HOST = socket.gethostname()


class InvalidTransition(RuntimeError):
    pass


def check_transition(old: str, new: str, run_id: str = "") -> None:
    """Raise InvalidTransition, in words a person understands, unless old -> new is allowed."""
    if new not in TRANSITIONS.get(old, ()):
        what = f"run {run_id}" if run_id else "the run"
        if new in (QUEUED, RUNNING) and old in ACTIVE_STATES:
            raise InvalidTransition(f"{what} is already {old}")
        if new in (QUEUED, RUNNING):
            raise InvalidTransition(f"{what} is {old}; only {', '.join(sorted(RESUMABLE_STATES))} runs "
                                    "can be resumed")
        raise InvalidTransition(f"{what} cannot go from {old} to {new}")


def pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (exited, not yet reaped) still answers kill(0); it is not running.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_gone(status: dict, now: float | None = None) -> bool:
    """True when an active run's owning process has died or stopped beating."""
    now = time.time() if now is None else now
    if status.get("host") == HOST and status.get("pid") is not None and not pid_alive(status.get("pid")):
        return True
    heartbeat = status.get("heartbeat")
    return status.get("state") == RUNNING and (heartbeat is None or now - heartbeat > HEARTBEAT_STALE_S)


def effective_state(status: dict, now: float | None = None) -> str:
    """The state every reader shows: an active run whose owner is gone is 'interrupted'."""
    state = status.get("state", UNREADABLE)
    if state in ACTIVE_STATES and owner_gone(status, now):
        return INTERRUPTED
    return state
