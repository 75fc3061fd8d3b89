"""A person's own words on a run: its tags and note (annotations.json), checked before anything is
written and replaced atomically (the Runs page, `core tag`, `core note`)."""
from __future__ import annotations

import json
import threading

from core.runs.files import atomic_write_json
from core.runs.layout import ANNOTATIONS_FILE
from core.runs.status import UnreadableRun

MAX_TAG_LENGTH = 40
MAX_NOTE_LENGTH = 5000
_LOCK = threading.RLock()     # read-modify-writes of one process do not interleave


class BadAnnotation(ValueError):
    """A tag or note that cannot be kept (empty, too long, a comma in a tag); nothing was written."""


def check_tag(tag) -> str:
    """A tag as it is kept (surrounding spaces dropped); BadAnnotation says what is wrong with it."""
    text = tag.strip() if isinstance(tag, str) else ""
    if not text:
        raise BadAnnotation(f"a tag must be some text, got {tag!r}")
    if len(text) > MAX_TAG_LENGTH:
        raise BadAnnotation(f"a tag must be at most {MAX_TAG_LENGTH} characters, got {len(text)} ({text[:20]}...)")
    if "," in text or not text.isprintable():
        raise BadAnnotation(f"a tag must not hold a comma, a line break or a control character: {text!r}")
    return text


def read_annotations(store, run_id: str) -> dict:
    """{"tags": [...], "note": "..."}: empty for a run never annotated; UnreadableRun for a file
    that cannot be understood (a hand edit), which is then left as it is."""
    store.existing_run_dir(run_id)
    try:
        value = json.loads(store.annotations_path(run_id).read_bytes())
    except FileNotFoundError:
        return {"tags": [], "note": ""}
    except (OSError, ValueError) as error:
        raise UnreadableRun(f"{ANNOTATIONS_FILE} cannot be read: {getattr(error, 'strerror', None) or error}")
    tags, note = (value.get("tags", []), value.get("note", "")) if isinstance(value, dict) else (None, None)
    try:
        if not isinstance(tags, list) or not isinstance(note, str):
            raise BadAnnotation("it must hold an object with a list of tags and a note")
        return {"tags": [check_tag(tag) for tag in tags], "note": note}
    except BadAnnotation as error:
        raise UnreadableRun(f"{ANNOTATIONS_FILE} cannot be read: {error}") from None


def set_tags(store, run_id: str, add=(), remove=()) -> list[str]:
    """Add and remove tags (sorted, each once); returns the run's tags. A bad tag changes nothing."""
    add, remove = [check_tag(t) for t in add], {t.strip() for t in remove if isinstance(t, str)}
    with _LOCK:
        tags = sorted((set(read_annotations(store, run_id)["tags"]) | set(add)) - remove)
        return annotate(store, run_id, tags=tags)["tags"]


def set_note(store, run_id: str, note: str) -> str:
    """Replace the run's note ("" clears it); returns it as kept."""
    return annotate(store, run_id, note=note)["note"]


def annotate(store, run_id: str, tags=None, note: str | None = None) -> dict:
    """Replace the run's tags and/or note (None keeps it) in one atomic write; both are checked
    first, so bad input changes nothing. Returns {"tags", "note"} as kept."""
    if tags is not None:
        tags = sorted({check_tag(tag) for tag in tags})
    if note is not None:
        if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH:
            raise BadAnnotation(f"a note must be text of at most {MAX_NOTE_LENGTH:,} characters"
                                + (f", got {len(note):,}" if isinstance(note, str) else ""))
        note = note.strip()
    with _LOCK:
        current = read_annotations(store, run_id)
        kept = {"tags": current["tags"] if tags is None else tags, "note": current["note"] if note is None else note}
        atomic_write_json(store.annotations_path(run_id), kept)
    store.announce_change(run_id)          # listings show the new tags at once
    return kept
