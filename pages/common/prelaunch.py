"""What the Train form offers besides Launch: finding a learning rate and the pre-flight check (each a
short job in a child process, core.jobs.folder_job, followed here until it reports), and the
settings as a file, out ("Download settings") and in ("Load settings from a file")."""
from __future__ import annotations

import streamlit as st

from core.analysis import plots
from core.config import ConfigError, RunConfig
from pages.common import forms, jobs_view

JOBS = {"lr_find": "Finding a learning rate…", "check": "Checking one batch…"}
SEVERITY_BOX = {"error": st.error, "warning": st.warning, "info": st.info}


def start(kind: str, job, config: RunConfig) -> None:
    """Follow `job` (jobs.find_lr or jobs.check of `config`) until it reports."""
    st.session_state.pop(f"{kind}_job_result", None)
    st.session_state[f"{kind}_job"] = job
    st.session_state[f"{kind}_values"] = config.to_dict()


def follow_jobs() -> None:
    for kind, label in JOBS.items():
        jobs_view.follow(f"{kind}_job", label, on_done=_lr_found if kind == "lr_find" else None)


def _lr_found(result: dict) -> None:
    """The LR finder's suggestion goes into the form."""
    if "error" not in result:
        values = st.session_state.get("lr_find_values", {})
        st.session_state["form_draft"] = {**values, "lr": float(f"{result['suggested_lr']:.2g}")}
        st.session_state["form_version"] = st.session_state.get("form_version", 0) + 1


def lr_find_outcome() -> None:
    result = st.session_state.get("lr_find_job_result")
    if not result:
        return
    if "error" in result:
        st.error(f"The LR finder failed: {result['error']}")
        return
    st.success(f"Suggested learning rate: **{result['suggested_lr']:.2g}** (a tenth of where the loss was "
               "lowest), now in the form.")
    st.plotly_chart(plots.lr_finder_curve(result["curve"], result["suggested_lr"]), key="lr_find_curve")


def check_outcome() -> None:
    """The pre-flight check's figures in plain words, and its findings as the diagnosis shows them."""
    report = st.session_state.get("check_job_result")
    if not report:
        return
    if "error" in report:
        st.error(f"The check failed: {report['error']}")
        return
    with st.container(border=True):
        errors = sum(f["severity"] == "error" for f in report["findings"])
        title = ("**Check: no problem found**" if not report["findings"] else
                 f"**Check: {len(report['findings'])} finding(s)**" + (f", {errors} error(s)" if errors else ""))
        st.markdown(title)
        show_findings(report["findings"])
        st.markdown("\n".join(f"- {line}" for line in report["lines"]))
        if st.button("Dismiss", key="dismiss_check"):
            del st.session_state["check_job_result"]
            st.rerun()


def show_findings(findings: list[dict]) -> None:
    """Findings as the diagnosis shows them (core.analysis.diagnosis.Finding.to_dict()), errors first."""
    for finding in findings:
        SEVERITY_BOX[finding["severity"]](f"**{finding['code'].replace('_', ' ')}**: {finding['message']}  \n"
                                          f"*What to try:* {finding['advice']}")


def settings_download(config: RunConfig) -> None:
    """Ready the form's settings as a YAML file (a button of the form asked for it)."""
    from core.settings_file import settings_text
    stem = "-".join(part for part in (config.name or f"{config.dataset}-{config.model}").split() if part)
    st.session_state["settings_file"] = (f"{stem}.yaml", settings_text(config, as_yaml=True))


def settings_file_button() -> None:
    if "settings_file" not in st.session_state:
        return
    name, text = st.session_state["settings_file"]
    cols = st.columns([2, 1, 5])
    cols[0].download_button(f"Save {name}", text, file_name=name, mime="application/yaml", key="settings_save",
                            on_click="ignore", icon=":material/download:")
    if cols[1].button("Done", key="settings_done"):
        del st.session_state["settings_file"]
        st.rerun()
    cols[2].caption("Train with it from the command line: `python -m core train --config FILE`; or load it here "
                    "later.")


def settings_upload() -> None:
    """'Load settings from a file': a YAML or JSON settings file (a run's config.json works) fills the
    picker and the form, as a recipe does; what is wrong with it is said instead, nothing changed."""
    version = st.session_state.setdefault("settings_upload_version", 0)
    with st.popover("Load settings from a file", icon=":material/upload_file:"):
        st.file_uploader("A settings file: YAML or JSON, e.g. from Download settings, `core show RUN_ID --config`, "
                         "or a run's config.json", type=["yaml", "yml", "json"], key=f"settings_upload_{version}",
                         on_change=_load_settings, args=(f"settings_upload_{version}",))
    problems = st.session_state.get("settings_upload_problems")
    if problems:
        st.error("The settings file was not loaded:\n" + "\n".join(f"- {p}" for p in problems))


def _load_settings(key: str) -> None:
    """Uploader callback (runs before the widgets exist, so it may fill them)."""
    from core.settings_file import config_from_settings, parse_settings
    upload = st.session_state.get(key)
    st.session_state["settings_upload_version"] = st.session_state.get("settings_upload_version", 0) + 1
    st.session_state.pop("settings_upload_problems", None)
    if upload is None:
        return
    try:
        text = upload.getvalue().decode("utf-8")
        config = config_from_settings(parse_settings(text, upload.name), upload.name)
    except UnicodeDecodeError:
        st.session_state["settings_upload_problems"] = [f"{upload.name} is not a text file (YAML or JSON expected)"]
        return
    except ConfigError as error:
        st.session_state["settings_upload_problems"] = error.problems
        return
    forms.fill_form(config, f"the settings file {upload.name}")
