"""Runs: every run in the store; filter by state, sort, download a run's metrics as CSV."""
import pandas as pd
import streamlit as st

from core.states import SHOWN_STATES
from pages import shared

shared.ensure_app_navigation()

st.title("Runs")
store = shared.store()
summaries = store.list_runs()
if not summaries:
    st.info("No runs yet: launch one on the Train page, or with `python -m core train`.")
    st.stop()

states = sorted(SHOWN_STATES)
cols = st.columns([3, 2, 1])
present = {r.state for r in summaries}
shown_states = cols[0].multiselect("States", states, default=[s for s in states if s in present], key="runs_states")
sort_by = cols[1].selectbox("Sort by", ("created", "best val acc", "duration", "name", "state"), key="runs_sort")
descending = cols[2].toggle("Descending", True, key="runs_desc")

frame = shared.runs_frame(shared.runs_in_view(summaries))
frame = frame[frame["state"].isin(shown_states)].sort_values(sort_by, ascending=not descending, na_position="last")
table = st.dataframe(frame, hide_index=True, key="runs_table", column_config=shared.RUNS_COLUMNS,
                     on_select="rerun", selection_mode="single-row")
search = st.session_state.get("run_search", "")
st.caption(f"{len(frame):,} of {len(summaries):,} runs" + (f" matching '{search}'" if search.strip() else "")
           + ". Click a row to pick its metrics below.")
if frame.empty:
    st.stop()

st.subheader("Download metrics")
rows = table.selection.rows
run_id = frame["run"].iloc[rows[0] if rows else 0]
metrics = pd.DataFrame(store.read_metrics(run_id))
st.download_button(f"metrics of {run_id} as CSV ({len(metrics)} rows)", metrics.to_csv(index=False),
                   file_name=f"{run_id}-metrics.csv", mime="text/csv", disabled=metrics.empty, key="runs_csv")
