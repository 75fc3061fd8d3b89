"""status.json's schema: the keys every reader may rely on, their defaults for older files, what their
values must be, and the reading of a file of any version (core.runs.states holds the states)."""
from __future__ import annotations

import time

from core.runs.states import CREATED, UNREADABLE, WRITTEN_STATES

STATUS_SCHEMA_VERSION = 2     # 1: status.json before the version was written

# key: (default when an older file lacks it, the type its value must have). Other keys (classes,
# last_val, setup, ...) are kept as they are.
_NUMBER = (int, float)
STATUS_FIELDS: dict[str, tuple] = {
    "epoch": (0, int), "step": (0, int), "total_steps": (None, int),
    "created_at": (None, _NUMBER), "started_at": (None, _NUMBER), "ended_at": (None, _NUMBER),
    "heartbeat": (None, _NUMBER), "best": (None, dict), "error": (None, str), "pid": (None, int),
    "host": (None, str),
}


class UnreadableRun(ValueError):
    """A run folder whose config.json or status.json cannot be understood; the message says why."""


def new_status() -> dict:
    """The status of a run just created."""
    return {"state": CREATED, "epoch": 0, "step": 0, "total_steps": None, "created_at": time.time(),
            "started_at": None, "ended_at": None, "heartbeat": None, "best": None, "error": None}


def unreadable_status(reason: str) -> dict:
    """What readers are given for a status.json that cannot be understood: defaults, the reason."""
    return {**{key: default for key, (default, _) in STATUS_FIELDS.items()}, "state": UNREADABLE, "error": reason}


def parse_status(value) -> dict:
    """A status.json object of any version, with defaults for missing keys; UnreadableRun says what
    is wrong with one that cannot be understood."""
    if not isinstance(value, dict):
        raise UnreadableRun(f"status.json must hold a JSON object, got {type(value).__name__}")
    state = value.get("state")
    if state not in WRITTEN_STATES:
        raise UnreadableRun(f"status.json has an unknown state {state!r}")
    status = dict(value)
    for key, (default, kind) in STATUS_FIELDS.items():
        item = status.setdefault(key, default)
        if item is not None and (isinstance(item, bool) or not isinstance(item, kind)):
            raise UnreadableRun(f"status.json: {key} has the wrong type ({item!r})")
    best = status["best"]
    if best is not None and not (isinstance(best.get("value"), _NUMBER) and isinstance(best.get("metric"), str)):
        raise UnreadableRun(f"status.json: best must hold a metric and a value, got {best!r}")
    return status
