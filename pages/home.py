"""Home: what Trainboard is, and the state of the runs at a glance."""
import streamlit as st

from core.runs.states import ACTIVE_STATES, COMPLETED, RESUMABLE_STATES
from pages.common import shared

shared.ensure_app_navigation()

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

st.subheader("Where to start")
st.page_link("pages/datasets.py", label="Datasets: what is in my data?", icon=":material/photo_library:")
st.page_link("pages/model.py", label="Model: layers, parameters, weights", icon=":material/account_tree:")
st.page_link("pages/train.py", label="Train: launch and watch a run", icon=":material/model_training:")
st.page_link("pages/runs.py", label="Runs: every run, filter, download metrics", icon=":material/table_rows:")
st.page_link("pages/insight.py", label="Insight: gradient flow, weight histograms, dead units, live",
             icon=":material/stacked_line_chart:")
st.page_link("pages/evaluate.py", label="Evaluate: confusion matrix, ROC/PR, report", icon=":material/insights:")
st.page_link("pages/predict.py", label="Predict: drop images, see the top classes", icon=":material/image_search:")
