"""Home: what Trainboard is, and the state of the runs at a glance."""
import streamlit as st

from core.runs.states import ACTIVE_STATES, COMPLETED, RESUMABLE_STATES
from pages.common import shared, site

st.title("Trainboard")
st.write("Train, inspect and serve PyTorch image classifiers without writing a training script. "
         "Everything a run produces lives in its folder, so the pages, the command line and a restarted "
         "server all see the same runs.")

runs = shared.store().list_runs()
states = [r.state for r in runs]
cols = st.columns(4)
cols[0].metric("Runs", len(runs))
cols[1].metric("Running or queued", sum(s in ACTIVE_STATES for s in states))
cols[2].metric("Completed", states.count(COMPLETED))
cols[3].metric("Stopped, interrupted or failed", sum(s in RESUMABLE_STATES for s in states))
if shared.jobs().recovered:
    st.info(f"{len(shared.jobs().recovered)} run(s) were running when the server last stopped; they are marked "
            "interrupted and can be resumed on the Train page.")
if shared.jobs().requeued:
    st.info(f"{len(shared.jobs().requeued)} run(s) were waiting in the queue when the server last stopped; "
            "they are queued again.")
if shared.jobs().followed:
    st.info(f"{len(shared.jobs().followed)} run(s) kept training after the server that started them stopped; "
            "this server follows them to their end (Stop works on them as on any run).")

st.subheader("Where to start")
for page in site.PAGES[1:]:
    st.page_link(site.page_path(page.name), label=f"{page.title}: {page.link}", icon=page.icon)
