"""Trainboard: train, inspect and serve PyTorch image classifiers from the browser."""
import streamlit as st

from pages.common import selection, shared

st.set_page_config(page_title="Trainboard", page_icon=":material/monitoring:", layout="wide")

navigation = st.navigation({
    "Data and model": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/datasets.py", title="Datasets", icon=":material/photo_library:"),
        st.Page("pages/model.py", title="Model", icon=":material/account_tree:"),
    ],
    "Training": [
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:"),
        st.Page("pages/insight.py", title="Insight", icon=":material/stacked_line_chart:"),
    ],
    "Results": [
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/insights:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/image_search:"),
    ],
})

with st.sidebar:
    st.caption(f"Runs folder: `{shared.runs_dir()}`")
    st.caption(f"Device: {shared.device_description()}")
    shared.remember_store_signature()
    if navigation.url_path != "train":      # the Train page checks the runs folder itself
        shared.watch_store()
    selection.selection_from_url()
    shared.run_picker()
    selection.write_selection_to_url()

navigation.run()
