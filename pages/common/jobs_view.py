"""Following a short job in a child process (core.jobs.folder_job) on a page: its progress every
second while it runs, then its result for the page, which reruns to show it."""
from __future__ import annotations

from typing import Callable

import streamlit as st


def follow(key: str, label: str, on_done: Callable[[dict], None] | None = None) -> None:
    """The job in st.session_state[key], if any: its progress bar until it ends, then its result in
    st.session_state[key + "_result"] ({"error"} for a failure), `on_done(result)`, and a rerun."""
    if key in st.session_state:
        st.fragment(run_every=1.0)(_tick)(key, label, on_done)


def _tick(key: str, label: str, on_done) -> None:
    job = st.session_state[key]
    if not job.done():
        done, total, stage = job.progress()
        what = f"{stage}: " if stage else ""
        st.progress(min(1.0, done / max(total, 1)), text=f"{label} {what}{done:,} of {total:,}")
        return
    result = job.result()
    del st.session_state[key]
    st.session_state[f"{key}_result"] = result
    if on_done:
        on_done(result)
    st.rerun(scope="app")
