"""The run store: one folder per run, created, read and moved between states here.

RunStore is the runs folder: its paths come from RunLayout (core.runs.layout), its listing from
RunListing (core.runs.summaries), its change journal from core.runs.journal; this module owns a run's
life: creating it, reading its config and status (tolerantly), the state transitions made while no
training process owns it, stopping and deleting it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from core.config import ConfigError, RunConfig, read_config_values
from core.runs.files import atomic_write_bytes, atomic_write_json, remove_temp_files
from core.runs.layout import CHECKPOINT_DIR, CONFIG_FILE, RUN_ID_PATTERN, STATUS_FILE, RunLayout, check_run_id
from core.runs.lease import check_not_running
from core.runs.states import ACTIVE_STATES, INTERRUPTED, QUEUED, RUNNING, STOPPED, check_transition, effective_state
from core.runs.status import STATUS_SCHEMA_VERSION, UnreadableRun, new_status, parse_status, unreadable_status
from core.runs.streams import JsonLinesReader, MetricsReader, is_probe_record
from core.runs.summaries import RunListing, RunSummary


class RunStore(RunLayout):
    """The runs folder. Thread-safe: every write is atomic or append-only, and the listing's cache is
    guarded by a lock."""

    def __init__(self, root: str | os.PathLike | None = None):
        super().__init__(root)
        self.listing = RunListing(self)

    # --- create / read / write ----------------------------------------------------------------
    def new_run_id(self, config: RunConfig) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", (config.name or f"{config.dataset}-{config.model}").lower())
        slug = slug.strip("-")[:40] or "run"
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{secrets.token_hex(2)}"

    def create_run(self, config: RunConfig) -> str:
        """Write config.json and a 'created' status.json; the config must already be valid."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            run_id = self.new_run_id(config)
            try:
                (self.root / run_id).mkdir()
                break
            except FileExistsError:
                continue
        (self.root / run_id / CHECKPOINT_DIR).mkdir()
        # status.json first: config.json is what makes the folder a run, so no reader sees a run
        # without a status.
        self.write_status(run_id, new_status())
        atomic_write_bytes(self.config_path(run_id), config.to_json().encode())
        self.announce_change(run_id)
        return run_id

    def read_config_with_unknown(self, run_id: str) -> tuple[RunConfig, dict]:
        """(config, settings this version does not know); UnreadableRun when it cannot be parsed."""
        path = self.existing_run_dir(run_id) / CONFIG_FILE
        try:
            return read_config_values(json.loads(path.read_bytes()))
        except (ValueError, TypeError, UnicodeDecodeError) as error:   # JSON, ConfigError
            reason = "; ".join(error.problems) if isinstance(error, ConfigError) else str(error)
            raise UnreadableRun(f"config.json cannot be read: {reason}") from None

    def read_config(self, run_id: str) -> RunConfig:
        """The run's config, read tolerantly (unknown settings aside, missing ones defaulted)."""
        return self.read_config_with_unknown(run_id)[0]

    def runnable_config(self, run_id: str) -> RunConfig:
        """The run's config when it can be trained as it is; UnreadableRun lists every problem."""
        config = self.read_config(run_id)
        problems = config.validate()
        if problems:
            raise UnreadableRun("config.json: " + "; ".join(problems))
        return config

    def read_status(self, run_id: str) -> dict:
        """status.json with defaults and the effective state (stale 'running' -> 'interrupted'); a
        status that cannot be understood reads as state 'unreadable' with the reason in 'error'."""
        try:
            status = parse_status(self.read_raw_status(run_id))
        except UnreadableRun as error:
            return unreadable_status(str(error))
        status["state"] = effective_state(status)
        return status

    def read_raw_status(self, run_id: str):
        """status.json as it is on disk (any JSON value); UnreadableRun-free: a missing or broken file
        reads as an object without a state."""
        path = self.existing_run_dir(run_id) / STATUS_FILE
        for _ in range(3):
            try:
                return json.loads(path.read_bytes())
            except (ValueError, FileNotFoundError):
                time.sleep(0.01)   # os.replace makes this rare; a retry covers odd filesystems
            except OSError as error:         # a folder, a permission, an I/O error
                return {"error": f"status.json cannot be read: {error.strerror or error}"}
        return {"error": "status.json is missing or not JSON"}

    def write_status(self, run_id: str, status: dict, fsync: bool = True, announce: bool = False) -> None:
        """Replace status.json. A state other than 'running', or `announce`, is also recorded in the
        change journal, so listings re-read this run; heartbeats of a running run are not (a running
        run is re-read on every listing anyway)."""
        atomic_write_json(self.status_path(run_id), {**status, "schema_version": STATUS_SCHEMA_VERSION}, fsync=fsync)
        if announce or status.get("state") != RUNNING:
            self.announce_change(run_id)

    def update_status(self, run_id: str, **changes) -> dict:
        """Read-modify-write of status.json, for when no training process owns it."""
        raw = self.read_raw_status(run_id)
        status = {**(raw if isinstance(raw, dict) else {}), **changes}
        self.write_status(run_id, status)
        return status

    def transition(self, run_id: str, state: str, **changes) -> dict:
        """Move a run to `state` (InvalidTransition unless core.runs.states allows it from its effective
        state) and record `changes`. Only for when no training process owns status.json."""
        current = self.read_status(run_id)
        check_transition(current["state"], state, run_id)
        return self.update_status(run_id, state=state, **changes)

    def announce_change(self, run_id: str) -> None:
        """Tell every listing, in this process and others, to read this run again."""
        self.listing.forget_last()
        self.listing.journal.announce(run_id)

    def remove_temp_files(self, run_id: str, older_than_s: float = 60.0) -> list[Path]:
        """Delete temp files left by a killed writer. Only the lease holder may call this: every temp
        checkpoint is then an orphan; other temps (status, metrics) count as orphans once they are
        older than any live atomic write."""
        run_dir = self.run_dir(run_id)
        return remove_temp_files(run_dir / CHECKPOINT_DIR, 0.0) + remove_temp_files(run_dir, older_than_s)

    # --- metrics and probes --------------------------------------------------------------------
    def read_metrics(self, run_id: str) -> list[dict]:
        return self.metrics_reader(run_id).read_new()

    def metrics_reader(self, run_id: str) -> MetricsReader:
        return MetricsReader(self.metrics_path(run_id))

    def probe_reader(self, run_id: str) -> JsonLinesReader:
        """probes.jsonl's records, read incrementally (read_new(), as metrics_reader)."""
        return JsonLinesReader(self.probes_path(run_id), is_probe_record)

    # --- listing -------------------------------------------------------------------------------
    def summary(self, run_id: str) -> RunSummary:
        """What the runs table shows of a run. A run whose files cannot be understood is summarised
        as 'unreadable' with the reason, never raised."""
        return self.listing.summary(check_run_id(run_id))

    def list_runs(self) -> list[RunSummary]:
        """Every run's summary, newest first; unreadable runs included, with their reason."""
        return self.listing.list_runs()

    def change_signature(self) -> tuple:
        """Changes when a run is created or deleted, or changes state or tags, from any process on this
        runs folder (the change journal grows); cheap enough for every open page to poll: one stat and
        one directory listing."""
        try:
            with os.scandir(self.root) as entries:
                names = hash(frozenset(e.name for e in entries if RUN_ID_PATTERN.fullmatch(e.name)))
        except FileNotFoundError:
            names = None
        return self.listing.journal.key(), names

    def active_runs(self) -> list[tuple[str, dict]]:
        """(run id, status as written) of the runs whose status.json says queued or running, alive or
        not: what a starting server recovers. Only runs that listings show as active or interrupted
        are read: not 10,000 status files."""
        found = []
        for summary in self.list_runs():
            if summary.state not in ACTIVE_STATES | {INTERRUPTED}:
                continue
            try:
                status = parse_status(self.read_raw_status(summary.run_id))
            except UnreadableRun:
                continue
            if status["state"] in ACTIVE_STATES:
                found.append((summary.run_id, status))
        return found

    # --- stop and delete -----------------------------------------------------------------------
    def request_stop(self, run_id: str) -> str | None:
        """Ask a run to end (the app's Stop and the CLI's `stop`): a queued run is stopped at once; a
        running one ends after its current batch, when its process finds the stop file. Returns
        'stopped', 'running' (the stop is asked), or None when the run is neither queued nor running."""
        status = parse_status(self.read_raw_status(run_id))
        if status["state"] == QUEUED:
            self.transition(run_id, STOPPED, pid=None, ended_at=time.time())
            # Also the file: a server that started this run a moment ago stops it at once. A resume
            # removes it.
            self.stop_path(run_id).write_text(str(time.time()))
            return STOPPED
        if effective_state(status) == RUNNING:
            # The process owns status.json while it runs: it learns of the stop from this file.
            self.stop_path(run_id).write_text(str(time.time()))
            return RUNNING
        return None

    def delete_run(self, run_id: str) -> None:
        status = self.read_status(run_id)
        if status["state"] in ACTIVE_STATES:
            raise RuntimeError(f"run {run_id} is {status['state']}; stop it before deleting it")
        check_not_running(self.lease_path(run_id), run_id)
        path = self.existing_run_dir(run_id)
        # Rename first so readers never see a half-deleted run as a run.
        trash = self.root / f".deleting-{run_id}-{secrets.token_hex(2)}"
        os.replace(path, trash)
        self.listing.forget_last()
        shutil.rmtree(trash, ignore_errors=True)
