"""The frame every page runs in: the navigation over pages/ (pages/common/site.py lists them) and the
sidebar (runs folder, device, run picker). The Streamlit script that app.py's st.App serves."""
import streamlit as st

from pages.common import selection, shared, site

st.set_page_config(page_title="Trainboard", page_icon=":material/monitoring:", layout="wide")

sections: dict[str, list] = {}
for page in site.PAGES:
    sections.setdefault(page.section, []).append(
        st.Page(site.page_path(page.name), title=page.title, icon=page.icon, default=page is site.PAGES[0]))
navigation = st.navigation(sections)

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
