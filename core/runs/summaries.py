"""What the runs tables show of each run (RunSummary), and listing thousands of runs cheaply: a summary
is read once and cached, in memory and across restarts, until the change journal or the run's files
say it changed. Also the helpers that work on summaries: run search, clone names."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import threading
import time
from dataclasses import dataclass

from core.config import SETTINGS, RunConfig
from core.runs.annotations import read_annotations
from core.runs.derived import evaluation_files
from core.runs.files import atomic_write_json
from core.runs.journal import ChangeJournal
from core.runs.layout import CHECKPOINTS, CONFIG_FILE, RUN_ID_PATTERN, STATUS_FILE, SUMMARIES_FILE, RunNotFound
from core.runs.states import ACTIVE_STATES, UNREADABLE
from core.runs.status import UnreadableRun

DEEP_CHECK_EVERY = 16       # list_runs re-checks each run's files every this many listings
LISTING_TTL_S = 0.5         # list_runs answers again from its last listing for this long
SUMMARIES_SAVE_EVERY_S = 10.0   # the summary cache is saved at most this often, when it changed
SUMMARIES_FORMAT = 2           # 2: settings, test accuracy, tags and note in the summaries


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    name: str
    state: str
    dataset: str
    model: str
    epoch: int
    epochs: int
    progress: float
    best_metric: str | None
    best_value: float | None
    created_at: float
    duration_s: float | None
    error: str | None
    notes: tuple[str, ...] = ()      # what a reader should know: settings this version does not know
    # The key settings, for the runs table's columns (None / "" for an unreadable run).
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = ""
    augmentation: str = ""
    test_acc: float | None = None    # from the cached evaluation on test (best.pt, else latest.pt), if fresh
    tags: tuple[str, ...] = ()       # a person's tags and note (annotations.json); not the notes above
    note: str = ""

    @property
    def label(self) -> str:
        """How a person tells runs apart in a picker; no state in it, so it holds still while a run trains."""
        return f"{self.name} · {self.run_id}" if self.name else self.run_id


CLONE_COUNTER = re.compile(r"^(.*) \((\d+)\)$")     # "baseline (2)": a counter no name is mistaken for


def clone_name(name: str, taken: set[str]) -> str:
    """A new name for a clone of a run called `name`: "baseline" -> "baseline (2)", "baseline (2)" ->
    "baseline (3)", the first not in `taken` (so the picker never lists two identical names)."""
    if not name:
        return name
    counted = CLONE_COUNTER.match(name)
    stem, start = (counted[1], int(counted[2]) + 1) if counted else (name, 2)
    return next(f"{stem} ({n})" for n in range(start, start + len(taken) + 2) if f"{stem} ({n})" not in taken)


def matching_runs(summaries: list[RunSummary], query: str) -> list[RunSummary]:
    """The runs whose name, id, state, dataset, model or tags contain every word of `query` (any case)."""
    words = query.lower().split()
    if not words:
        return list(summaries)
    return [s for s in summaries
            if all(w in f"{s.name} {s.run_id} {s.state} {s.dataset} {s.model} {' '.join(s.tags)}".lower()
                   for w in words)]


def _batch_size(config: RunConfig, status: dict) -> int | None:
    """The number a run trains with: batch_size auto's is the one its probe found (None until then)."""
    if isinstance(config.batch_size, int):
        return config.batch_size
    setup = status.get("setup")
    return setup.get("batch_size") if isinstance(setup, dict) else None


def _augmentation_text(config: RunConfig) -> str:
    """The augmentation settings that are on, by their labels: 'Random crop, Rotation 15'; 'none'."""
    parts = []
    for name, setting in SETTINGS.items():
        value = getattr(config, name)
        if setting.group != "augmentation" or not value:
            continue
        label = re.sub(r"\s*\(.*\)", "", setting.label)        # "Rotation (degrees)" -> "Rotation"
        parts.append(label if value is True else f"{label} {value:g}")
    return ", ".join(parts) or "none"


def _folder_key(folder: str) -> tuple:
    """Changes whenever a file in the run folder is replaced: every write of status.json and
    config.json is an os.replace, which updates the folder's mtime. One stat per run."""
    stat = os.stat(folder)
    return stat.st_ino, stat.st_mtime_ns


def _files_key(folder: str) -> tuple:
    """Changes when config.json or status.json is edited in place too (an editor that does not
    replace the file): the deep check, made on a rotating share of the runs each listing."""
    key = []
    for name in (CONFIG_FILE, STATUS_FILE):
        try:
            stat = os.stat(os.path.join(folder, name))
            key.append((stat.st_ino, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            key.append(None)
    return tuple(key)


def read_summary(store, run_id: str) -> RunSummary:
    """A run's summary read from its files. A run whose files cannot be understood is summarised as
    'unreadable' with the reason, never raised; RunNotFound when the folder holds no run."""
    status = store.read_status(run_id)
    try:
        config, unknown = store.read_config_with_unknown(run_id)
    except UnreadableRun as error:
        return RunSummary(run_id, "", UNREADABLE, "?", "?", 0, 0, 0.0, None, None,
                          status["created_at"] or 0.0, None, str(error))
    problems = config.validate()
    if problems or status["state"] == UNREADABLE:
        # Shown with what can be told of it (its name, when that at least is text).
        text = {name: value if isinstance(value, str) else "?"
                for name, value in (("name", config.name), ("dataset", config.dataset), ("model", config.model))}
        reason = "config.json: " + "; ".join(problems) if problems else status["error"]
        return RunSummary(run_id, text["name"] if text["name"] != "?" else "", UNREADABLE, text["dataset"],
                          text["model"], 0, 0, 0.0, None, None, status["created_at"] or 0.0, None, reason)
    notes = (f"config.json has settings this version does not know (kept, not used): "
             f"{', '.join(sorted(unknown))}",) if unknown else ()
    try:
        annotations = read_annotations(store, run_id)
    except UnreadableRun as error:
        annotations = {"tags": [], "note": ""}
        notes += (f"{error}; its tags and note are not shown (fix or delete the file)",)
    best = status["best"] or {}
    started, ended = status["started_at"], status["ended_at"]
    duration = None
    if started:
        duration = (ended or (status["heartbeat"] if status["state"] not in ACTIVE_STATES
                              else time.time()) or started) - started
    total = status["total_steps"] or 0
    progress = 1.0 if status["state"] == "completed" else (min(1.0, status["step"] / total) if total else 0.0)
    return RunSummary(run_id=run_id, name=config.name, state=status["state"], dataset=config.dataset,
                      model=config.model, epoch=status["epoch"], epochs=config.epochs, progress=progress,
                      best_metric=best.get("metric"), best_value=best.get("value"),
                      created_at=status["created_at"] or 0.0, duration_s=duration, error=status["error"],
                      notes=notes, batch_size=_batch_size(config, status), lr=config.lr,
                      optimizer=config.optimizer, augmentation=_augmentation_text(config),
                      test_acc=_fresh_test_accuracy(store, run_id),
                      tags=tuple(annotations["tags"]), note=annotations["note"])


def _fresh_test_accuracy(store, run_id: str) -> float | None:
    """Test accuracy from the evaluation cache (best.pt's, else latest.pt's), never computed here;
    None when the run was not evaluated on test, or its checkpoint changed since."""
    for checkpoint in CHECKPOINTS:
        accuracy = (evaluation_files(store, run_id, checkpoint, "test").record() or {}).get("accuracy")
        if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
            return float(accuracy)
    return None


class RunListing:
    """Every run's summary, cheap at 10,000 runs: one directory listing, then a finished run's cached
    summary is used as it is unless the change journal names it; running runs are read afresh; a
    rotating sixteenth of the runs get the deep check (their files stat()ed), which also catches
    files edited in place by hand. Several pages in one rerun share one listing (ttl_s)."""

    def __init__(self, store):
        self.store = store
        self.journal = ChangeJournal(store.root)
        # run_id -> (folder key, files key, RunSummary): a finished run's files are read once, then
        # only its folder is stat()ed, so thousands of runs stay cheap to list.
        self.cache: dict[str, tuple[tuple, tuple, RunSummary]] = {}
        self.listings = 0
        self.started = False                  # the first listing loads the summaries saved on disk
        self.unsaved, self.saved_at = False, 0.0
        self.last: tuple[float, list[RunSummary], tuple] | None = None
        self.ttl_s = LISTING_TTL_S
        self.lock = threading.RLock()

    def forget_last(self) -> None:
        """The next listing reads the folder (this process changed a run)."""
        self.last = None

    def summary(self, run_id: str) -> RunSummary:
        summary = self._summary_in(run_id)
        if summary is None:
            raise RunNotFound(f"no run {run_id!r} in {self.store.root}")
        return summary

    def _summary_in(self, run_id: str) -> RunSummary | None:
        """The run's summary, from the cache while its folder and files are unchanged; None when the
        folder holds no run (no config.json)."""
        folder = os.path.join(self.store.root, run_id)
        try:
            folder_key = _folder_key(folder)
        except FileNotFoundError:
            return None
        with self.lock:
            cached = self.cache.get(run_id)
        # An active run's effective state and duration move with the clock: always read afresh.
        files_key = _files_key(folder)          # taken before reading: a later change is seen next time
        if cached and cached[:2] == (folder_key, files_key) and cached[2].state not in ACTIVE_STATES:
            return cached[2]
        try:
            summary = self.read(run_id)
        except RunNotFound:
            return None
        with self.lock:
            self.cache[run_id] = (folder_key, files_key, summary)
            self.unsaved |= summary.state not in ACTIVE_STATES
        return summary

    def read(self, run_id: str) -> RunSummary:
        """Read a run's summary from its files (tests and benchmarks count these reads)."""
        return read_summary(self.store, run_id)

    def folder_stamp(self) -> tuple:
        """Two stats that change with any run created, deleted or changing state (a run folder made or
        removed changes the runs folder's mtime; so does the summary cache's write, which only costs a
        listing)."""
        try:
            root = os.stat(self.store.root).st_mtime_ns
        except FileNotFoundError:
            root = None
        return self.journal.key(), root

    def list_runs(self) -> list[RunSummary]:
        with self.lock:
            last, stamp = self.last, self.folder_stamp()
            # Within the TTL, and only if no process changed the folder since (a page rerun because
            # of that change must see it).
            if last and time.monotonic() - last[0] < self.ttl_s and last[2] == stamp:
                return list(last[1])
            summaries = self._list_runs()
            self.last = (time.monotonic(), summaries, stamp)
            return list(summaries)

    def _list_runs(self) -> list[RunSummary]:
        root = os.fspath(self.store.root)
        if not os.path.isdir(root):
            return []
        if not self.started:
            # The first listing of this process: start from the summaries a previous process saved
            # and check each run's folder once; the journal's past is not needed.
            self.load_saved()
            self.journal.skip_to_end()
            self.started, changed = True, None
        else:
            changed = self.journal.changed_runs()         # None: the journal was lost, check every folder
        with os.scandir(root) as entries:
            names = sorted((e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)), reverse=True)
        self.listings += 1
        turn, cache, summaries = self.listings % DEEP_CHECK_EVERY, self.cache, []
        for i, name in enumerate(names):
            cached = cache.get(name)
            if (cached is not None and i % DEEP_CHECK_EVERY != turn and cached[2].state not in ACTIVE_STATES
                    and (changed is None or name not in changed)):
                if changed is not None:
                    summaries.append(cached[2])      # the common case: no syscall at all
                    continue
                try:
                    if _folder_key(f"{root}/{name}") == cached[0]:
                        summaries.append(cached[2])
                        continue
                except FileNotFoundError:
                    continue
            if changed and name in changed:
                cache.pop(name, None)
            summary = self._summary_in(name)
            if summary is not None:
                summaries.append(summary)
        listed = {s.run_id for s in summaries}
        for gone in [r for r in cache if r not in listed]:
            del cache[gone]
        if self.unsaved and time.monotonic() - self.saved_at > SUMMARIES_SAVE_EVERY_S:
            self.save()
        return summaries

    def save(self) -> None:
        """Write the summary cache for the next process (best effort: it is only a cache)."""
        runs = {run_id: [folder_key, files_key, dataclasses.asdict(summary)]
                for run_id, (folder_key, files_key, summary) in self.cache.items()
                if summary.state not in ACTIVE_STATES}
        try:
            atomic_write_json(self.store.root / SUMMARIES_FILE, {"format": SUMMARIES_FORMAT, "runs": runs},
                              fsync=False)
        except OSError:
            return
        self.unsaved, self.saved_at = False, time.monotonic()

    def load_saved(self) -> None:
        """Fill the cache from the saved summaries; a missing, older or broken file is ignored."""
        try:
            saved = json.loads((self.store.root / SUMMARIES_FILE).read_bytes())
            if saved.get("format") != SUMMARIES_FORMAT:
                return
            loaded = {}
            for run_id, (folder_key, files_key, fields) in saved["runs"].items():
                files_key = tuple(tuple(k) if k is not None else None for k in files_key)
                loaded[run_id] = (tuple(folder_key), files_key,
                                  RunSummary(**{**fields, "notes": tuple(fields["notes"]),
                                                "tags": tuple(fields["tags"])}))
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return
        self.cache.update(loaded)
