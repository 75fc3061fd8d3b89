"""What every page shares: the run store, the one JobManager of this server, the chosen run.

Streamlit-side glue only; the engine is core/. Not a page: app.py's st.navigation lists the pages.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

from core.jobs.manager import JobManager
from core.runs.layout import default_runs_dir
from core.runs.states import ACTIVE_STATES
from core.runs.store import RunStore
from core.runs.summaries import matching_runs

if TYPE_CHECKING:
    import pandas as pd

RUN_KEY = "run_id"


def runs_dir() -> Path:
    return default_runs_dir().resolve()


def datasets_dir() -> Path:
    """Where the Datasets page keeps uploaded datasets (core.data.uploads.datasets_dir of this runs folder)."""
    from core.data.uploads import datasets_dir as of_runs
    return of_runs(runs_dir())


@st.cache_resource(show_spinner=False)
def _job_manager(root: str) -> JobManager:
    # One per server process and runs folder; its constructor marks orphaned runs interrupted.
    return JobManager(RunStore(root))


def jobs() -> JobManager:
    return _job_manager(str(runs_dir()))


def store() -> RunStore:
    return jobs().store


@st.cache_data(show_spinner=False)
def device_description() -> str:
    """The training device, found without importing torch (nvidia-smi), so start-up stays fast."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "" or not shutil.which("nvidia-smi"):
        return f"CPU ({os.cpu_count()} cores)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        out = []
    return "; ".join(f"GPU {line.strip()}" for line in out) or f"CPU ({os.cpu_count()} cores)"


def selected_run() -> str | None:
    run_id = st.session_state.get(RUN_KEY)
    return run_id if run_id and store().exists(run_id) else None


def run_with_best_checkpoint() -> str:
    """The chosen run, for pages that need its best.pt; otherwise say why and stop the page."""
    run_id = selected_run()
    if run_id is None:
        st.info("No run chosen: train one on the Train page, then pick it in the sidebar.")
        st.stop()
    if not store().checkpoint_path(run_id, "best").exists():
        st.info(f"Run {run_name(run_id)} has no best.pt yet: it is written at the end of each epoch.")
        st.stop()
    return run_id


def select_run(run_id: str | None) -> None:
    """Make run_id the chosen run on every page (applied before the sidebar picker draws)."""
    st.session_state["_pending_run"] = run_id


def run_label(run_id: str) -> str:
    """The run's name (or id) and its state, for headings."""
    summary = store().summary(run_id)
    return f"{summary.name or run_id} · {summary.state}"


PICKER_LIMIT = 100      # runs a picker lists at once: each 10,000-option picker cost ~0.9 s per page


def runs_in_view(summaries: list | None = None) -> list:
    """The runs the sidebar search matches (all runs when it is empty), newest first."""
    summaries = store().list_runs() if summaries is None else summaries
    return matching_runs(summaries, st.session_state.get("run_search", ""))


def run_picker() -> str | None:
    """The sidebar picker; the choice lives in session_state so it survives page switches. It lists
    the newest PICKER_LIMIT runs that the search box matches (the box shows once there are more), and
    the chosen run always."""
    summaries = store().list_runs()
    labels = {s.run_id: s.label for s in summaries}
    if "_pending_run" in st.session_state:
        st.session_state[RUN_KEY] = st.session_state.pop("_pending_run")
    if st.session_state.get(RUN_KEY) not in labels:
        st.session_state[RUN_KEY] = summaries[0].run_id if summaries else None
    if not summaries:
        st.sidebar.caption("No runs yet: launch one on the Train page.")
        return None
    if len(summaries) > PICKER_LIMIT:
        st.sidebar.text_input("Find a run", key="run_search", placeholder="name, id, state, dataset, model, tag")
    found = runs_in_view(summaries)
    ids = [s.run_id for s in found[:PICKER_LIMIT]]
    if st.session_state[RUN_KEY] not in ids:
        ids.insert(0, st.session_state[RUN_KEY])
    if len(found) > PICKER_LIMIT:
        st.sidebar.caption(f"The newest {PICKER_LIMIT} of {len(found):,} matching runs; type to narrow.")
    # Sent to the browser on every run, not only when set here: a run cut short (a rerun by the runs
    # folder's watcher) can leave the browser showing the picker's default, the newest run, beside
    # the pages of the run chosen, and the next click would then switch to it.
    st.session_state[RUN_KEY] = st.session_state[RUN_KEY]
    # Labels must not change while a run trains (a state in them would reset the choice).
    return st.sidebar.selectbox(f"Run ({len(summaries):,})", ids, key=RUN_KEY, format_func=labels.get,
                                help="type to search by name or run id")


WATCH_S = 2.0                # how soon a page sees runs created, deleted or changing state elsewhere
# How often a runs table refreshes while a run is active (progress, durations in these steps, best):
# a table re-sent costs a watching browser a redraw (bench/watch_cost.py), and a run created, deleted
# or changing state reruns the page within WATCH_S anyway.
TABLE_TICK_S = 10.0
SIGNATURE = "_store_signature"


def remember_store_signature() -> None:
    """Called by app.py on every full run: what the page drawn now reflects."""
    st.session_state[SIGNATURE] = store().change_signature()


def check_store() -> None:
    """Rerun the page if a run was created, deleted or changed state anywhere (another tab, the CLI,
    another server on this runs folder) since the page was drawn: a stat and a directory listing."""
    if st.session_state.get(SIGNATURE) != store().change_signature():
        st.rerun(scope="app")


def watch_store() -> None:
    """Every open page checks the runs folder every WATCH_S, in a fragment that draws nothing. The
    Train page checks from its progress fragment instead: each fragment run still costs a watching
    browser a little (bench/watch_cost.py)."""
    st.fragment(run_every=WATCH_S)(check_store)()


def any_run_active() -> bool:
    return any(s.state in ACTIVE_STATES for s in store().list_runs())


def run_name(run_id: str) -> str:
    try:
        return store().summary(run_id).name or run_id
    except Exception:
        return run_id


MISSING = "–"      # a table's value a row does not have (no test acc before an evaluation), not "None"
RUNS_COLUMNS = {
    "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
    "test acc": st.column_config.NumberColumn(format="%.4f", help="accuracy on the test split, from the "
                                              "Evaluate page's or `core eval`'s cached report "
                                              "(best.pt, else latest.pt)"),
    "best val acc": st.column_config.NumberColumn(format="%.4f"),
    "batch size": st.column_config.NumberColumn(format="%d"),
    "lr": st.column_config.NumberColumn(format="%g"),
    "tags": st.column_config.ListColumn("tags"),
    "note": st.column_config.TextColumn("note", width="medium"),
    "duration": st.column_config.NumberColumn("duration (s)", format="%.1f"),
}


def live_duration(summary) -> float | None:
    """A run's duration for the table; an active run's in whole TABLE_TICK_S. A table whose values
    changed costs a watching browser a redraw, CPU a run on the same machine does not get
    (bench/watch_cost.py): the progress column is kept to the whole percent it shows, the duration to
    a change at each of the table's refreshes."""
    if summary.duration_s is None or summary.state not in ACTIVE_STATES:
        return summary.duration_s
    return float(summary.duration_s // TABLE_TICK_S * TABLE_TICK_S)


def runs_frame(summaries) -> pd.DataFrame:
    """The runs table shared by the Train and Runs pages (built column by column: one
    pd.to_datetime per row took 2.8 s for 10,000 runs)."""
    import pandas as pd
    frame = pd.DataFrame({
        # An unnamed run shows its id as its name: rows of unnamed runs are told apart in the first column.
        "run": [s.run_id for s in summaries], "name": [s.name or s.run_id for s in summaries],
        "state": [s.state for s in summaries], "progress": [round(s.progress, 2) for s in summaries],
        "test acc": [s.test_acc for s in summaries],
        "best val acc": [s.best_value if s.best_metric == "val_acc" else None for s in summaries],
        "epoch": [f"{s.epoch}/{s.epochs}" for s in summaries],
        "model": [s.model for s in summaries], "dataset": [s.dataset for s in summaries],
        "batch size": [s.batch_size for s in summaries], "lr": [s.lr for s in summaries],
        "optimizer": [s.optimizer for s in summaries], "augmentation": [s.augmentation for s in summaries],
        "tags": [list(s.tags) for s in summaries], "note": [s.note for s in summaries],
        "duration": [live_duration(s) for s in summaries],
        "created": pd.to_datetime([s.created_at for s in summaries], unit="s"),
        "error": [s.error for s in summaries]})
    for column in ("test acc", "best val acc", "lr", "duration"):
        frame[column] = frame[column].astype(float)
    frame["batch size"] = frame["batch size"].astype("Int64")
    return frame


def live_probes(run_id: str) -> list[dict]:
    """The run's probe records, only the new ones read at each refresh (as live_metrics)."""
    reader_key, records_key = f"probe_reader:{run_id}", f"probes:{run_id}"
    if reader_key not in st.session_state:
        st.session_state[reader_key], st.session_state[records_key] = store().probe_reader(run_id), []
    if not store().probes_path(run_id).exists():  # never written (an older run), or removed
        st.session_state[reader_key], st.session_state[records_key] = store().probe_reader(run_id), []
        return st.session_state[records_key]
    new = st.session_state[reader_key].read_new()
    if new and new[0].get("__reset__"):          # a resume dropped records
        st.session_state[records_key], new = [], new[1:]
    st.session_state[records_key].extend(new)
    return st.session_state[records_key]
