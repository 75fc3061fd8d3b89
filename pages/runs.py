"""Runs: every run in the store with its key settings, test accuracy, tags and note; filter by state
and tag, sort; click a row to open the run on the Train page; tag and annotate the chosen run and
download its metrics as CSV."""
import pandas as pd
import streamlit as st

from core.runs.annotations import MAX_NOTE_LENGTH, BadAnnotation, annotate
from core.runs.states import SHOWN_STATES
from core.runs.status import UnreadableRun
from pages.common import shared, site

SORTS = ("created", "test acc", "best val acc", "duration", "name", "state")
# What tells runs apart first; the long run id near the end (the run's name leads, its id is in the sidebar).
COLUMN_ORDER = ("name", "tags", "state", "test acc", "best val acc", "epoch", "model", "dataset", "batch size", "lr",
                "optimizer", "augmentation", "note", "progress", "duration", "created", "run", "error")

st.title("Runs")
store = shared.store()
summaries = store.list_runs()
if not summaries:
    st.info("No runs yet: launch one on the Train page, or with `python -m core train`.")
    st.stop()

states = sorted(SHOWN_STATES)
all_tags = sorted({tag for s in summaries for tag in s.tags})
cols = st.columns([3, 3, 2, 1.5], vertical_alignment="bottom")     # room for "Descending"
# None chosen means every state: a run that reaches a state no run had when the page opened still shows.
shown_states = cols[0].multiselect("States", states, key="runs_states", placeholder="any state")
if "runs_tags" in st.session_state:       # a tag removed since is no longer an option
    st.session_state["runs_tags"] = [t for t in st.session_state["runs_tags"] if t in all_tags]
wanted_tags = cols[1].multiselect("Tags", all_tags, key="runs_tags", placeholder="any tag",
                                  help="runs holding every tag chosen", disabled=not all_tags)
sort_by = cols[2].selectbox("Sort by", SORTS, key="runs_sort")
descending = cols[3].toggle("Descending", True, key="runs_desc")


def runs_table() -> bool:
    """The table, with what the filters keep; redrawn every shared.TABLE_TICK_S while a run is active.
    A click on a row opens that run on the Train page. Returns whether any row is shown."""
    summaries = store.list_runs()
    in_view = shared.runs_in_view(summaries)
    if wanted_tags:
        in_view = [s for s in in_view if set(wanted_tags) <= set(s.tags)]
    if shown_states:
        in_view = [s for s in in_view if s.state in shown_states]
    frame = shared.runs_frame(in_view).sort_values(sort_by, ascending=not descending, na_position="last")
    # A new key after each open: the table comes back without the row that was clicked still selected.
    version = st.session_state.setdefault("runs_table_version", 0)
    # A click on a cell selects that cell, on the row's box the row: either opens the run.
    table = st.dataframe(frame, hide_index=True, key=f"runs_table_{version}", column_config=shared.RUNS_COLUMNS,
                         placeholder=shared.MISSING, column_order=COLUMN_ORDER, on_select="rerun",
                         selection_mode=["single-row", "single-cell"])
    clicked = table.selection.rows or [row for row, _ in table.selection.cells]
    if clicked:
        st.session_state["runs_table_version"] = version + 1
        shared.select_run(frame["run"].iloc[clicked[0]])
        st.switch_page(site.page_path("train"))
    search = st.session_state.get("run_search", "")
    st.caption(f"{len(frame):,} of {len(summaries):,} runs" + (f" matching '{search}'" if search.strip() else "")
               + (f" tagged {', '.join(wanted_tags)}" if wanted_tags else "")
               + ". Click a row to open the run on the Train page. Test accuracy shows once the run has been "
                 "evaluated on test (Evaluate page, or `python -m core eval RUN_ID --split test`).")
    return not frame.empty


any_shown = st.fragment(run_every=shared.TABLE_TICK_S if shared.any_run_active() else None)(runs_table)()

run_id = shared.selected_run()
if not any_shown or run_id is None:
    st.stop()
summary = store.summary(run_id)
st.subheader(f"{summary.name or run_id}: tags and note")
st.caption(f"{run_id}: the run chosen in the sidebar.")
with st.form(f"annotate_{run_id}", border=False):
    tags = st.multiselect("Tags", sorted(set(all_tags) | set(summary.tags)), default=list(summary.tags),
                          accept_new_options=True, key=f"tags_{run_id}", placeholder="type a tag and press Enter")
    note = st.text_area("Note", summary.note, max_chars=MAX_NOTE_LENGTH, key=f"note_{run_id}", height=90)
    if st.form_submit_button("Save tags and note"):
        try:
            annotate(store, run_id, tags=tags, note=note)
        except (BadAnnotation, UnreadableRun) as error:
            st.error(f"Nothing was saved: {error}")
        else:
            st.session_state["runs_annotated"] = run_id
            st.rerun()           # the table above shows the new tags
if st.session_state.pop("runs_annotated", None) == run_id:
    st.toast("Tags and note saved.")

st.subheader("Download metrics")
metrics = pd.DataFrame(store.read_metrics(run_id))
st.download_button(f"metrics of {run_id} as CSV ({len(metrics)} rows)", metrics.to_csv(index=False),
                   file_name=f"{run_id}-metrics.csv", mime="text/csv", disabled=metrics.empty, key="runs_csv")
