"""The selection every page shares: the dataset and model chosen (kept where a page switch does not
clear them), and the address bar that names them with the chosen run, so a link opens the same page
and choices (?run=ID&dataset=NAME&model=NAME)."""
from __future__ import annotations

import streamlit as st

from core.config import SETTINGS
from pages.common import shared

KEPT = "dataset_choice"     # the picker's values, kept where a page switch does not clear them


def chosen_dataset() -> str | None:
    """The dataset picked on a page with the picker, or from a link (None before either: the address
    bar then names none, rather than the default digits beside a run of another dataset)."""
    return st.session_state.get("ds_name", st.session_state.get(KEPT, {}).get("ds_name"))


def choose_dataset(dataset: str) -> None:
    """Make `dataset` the picker's choice on every page (from a link); an unknown name is ignored."""
    if dataset in SETTINGS["dataset"].choices:
        st.session_state["ds_name"] = st.session_state.setdefault(KEPT, {})["ds_name"] = dataset


def chosen_model() -> str | None:
    """The model picked beside the data or on the Model page (None before either was drawn)."""
    return st.session_state.get("ds_model", st.session_state.get(KEPT, {}).get("ds_model"))


def choose_model(model: str) -> None:
    """Make `model` the choice on every page (from a link or the Model page); unknown names are ignored."""
    if model in SETTINGS["model"].choices:
        st.session_state["ds_model"] = st.session_state.setdefault(KEPT, {})["ds_model"] = model


URL_WRITTEN = "_url_written"    # the query parameters this session last put in the address bar
URL_KEYS = ("run", "dataset", "model")


def selection_from_url() -> None:
    """A link names the run, dataset and model (?run=ID&dataset=NAME&model=NAME): adopt what the address
    bar says when it differs from what this session last wrote there (a link opened, an address typed).
    A page switch clears the parameters; write_selection_to_url then puts them back."""
    params, written = st.query_params, st.session_state.get(URL_WRITTEN, {})
    run_id = params.get("run")
    if run_id and run_id != written.get("run") and shared.store().exists(run_id):
        shared.select_run(run_id)
    for key, choose in (("dataset", choose_dataset), ("model", choose_model)):
        value = params.get(key)
        if value and value != written.get(key):
            choose(value)


def write_selection_to_url() -> None:
    """The chosen run, dataset and model in the address bar, so the URL opens the same page and choices."""
    wanted = {key: value for key, value in (("run", shared.selected_run()), ("dataset", chosen_dataset()),
                                            ("model", chosen_model())) if value}
    if {key: st.query_params.get(key) for key in URL_KEYS} != {**dict.fromkeys(URL_KEYS), **wanted}:
        for key in URL_KEYS:
            if key in wanted:
                st.query_params[key] = wanted[key]
            elif key in st.query_params:
                del st.query_params[key]
    st.session_state[URL_WRITTEN] = wanted
