"""Train: a form launches a run; a live view follows the chosen run; stop, resume, clone, delete, compare."""
import dataclasses
import time

import pandas as pd
import streamlit as st

from core.analysis.diagnosis import diagnose
from core.config import SETTINGS, RunConfig, read_config_values
from core.data.datasets import validate_run_config
from core.runs.live import LiveMetrics
from core.runs.states import ACTIVE_STATES, RESUMABLE_STATES, UNREADABLE
from core.runs.status import UnreadableRun
from core.runs.summaries import clone_name
from pages.common import compare, curves, forms, prelaunch, shared

# How often each part of the live view refreshes while a run is active. Each refresh costs a watching
# browser a redraw of what it re-sends, unchanged or not, and CPU the browser takes on a small machine
# is CPU a run on it does not get (bench/watch_cost.py, bench/chart_redraw.py).
REFRESH_S = shared.WATCH_S   # the chosen run's progress and latest figures, and the runs folder's check
CURVES_TICK_S = 10.0     # the loss and accuracy chart and the diagnosis
RATES_TICK_S = 30.0      # the learning-rate and throughput charts (TensorBoard reloads every 30 s)
FORM_OPEN = "new_run_open"        # whether the "New run" expander is open

st.title("Train")
store, jobs = shared.store(), shared.jobs()


# --- the launch form -----------------------------------------------------------------------------
def launch_form() -> None:
    version = st.session_state.setdefault("form_version", 0)   # bumped by Clone to reset the widgets
    clone = st.session_state.get("clone_config")
    # The form's values as they were when the LR finder ran, with its suggestion as the lr.
    draft = st.session_state.get("form_draft")
    if (clone or draft) and st.session_state.get("form_opened_for") != version:    # a new prefill shows
        st.session_state[FORM_OPEN], st.session_state["form_opened_for"] = True, version
    # Drawn only while open: a folded form's sixty widgets still cost every live refresh of the page
    # a re-render in the browser (bench/watch_cost.py).
    form = st.expander("New run", expanded=not store.run_ids(), key=FORM_OPEN, on_change="rerun")
    if not form.open:
        return
    with form:
        if clone:
            st.info(f"Prefilled from {st.session_state.get('clone_of')}. Change what you like and launch.")
            if st.session_state.get("clone_caution"):
                st.warning(st.session_state["clone_caution"])
        forms.recipe_buttons()
        prelaunch.settings_upload()
        data = forms.dataset_picker(st.container(border=True), pick_model=True)
        # A clone's settings apply to its own dataset; another dataset starts from its own defaults.
        prefill = draft or clone
        base = read_config_values(prefill)[0] if prefill and prefill.get("dataset") == data.dataset else data
        base = dataclasses.replace(base, **{name: getattr(data, name) for name in forms.DATA_FIELDS})
        with st.form("launch", enter_to_submit=False):      # Enter in "Run name" never launches a run
            values = forms.settings_form(base, key_prefix=f"tf_{data.dataset}_{version}")
            cols = st.columns([1, 1, 2, 2, 3])
            launched = cols[0].form_submit_button("Launch", type="primary")
            check = cols[1].form_submit_button(
                "Check", help="one batch through the model before you launch: the data as the model reads it, the "
                              "first loss against chance, the gradients, one update, a step's time and memory, the "
                              "run's length; problems said as the diagnosis would say them. Nothing is written")
            find_lr = cols[2].form_submit_button("Find a learning rate",
                                                 help="a learning-rate range test on these settings (a short run "
                                                      "of a fresh model); its suggestion goes into the form")
            save = cols[3].form_submit_button("Download settings",
                                              help="these settings as a YAML file: `python -m core train --config "
                                                   "FILE` trains with them, Load settings brings them back")
        prelaunch.follow_jobs()
        prelaunch.lr_find_outcome()
        prelaunch.check_outcome()
        config = dataclasses.replace(base, **values)
        if save:
            prelaunch.settings_download(config)
        prelaunch.settings_file_button()
        if launched or find_lr or check:
            problems = validate_run_config(config)
            # Kept until the user acts again: a run finishing elsewhere reruns the page.
            what = "Nothing was launched" if launched else "The LR finder did not start" if find_lr else \
                "The check did not start"
            st.session_state["launch_problems"] = (what, problems)
        if st.session_state.get("launch_problems", (None, []))[1]:
            what, problems = st.session_state["launch_problems"]
            st.error(f"{what}. Please fix:\n" + "\n".join(f"- {p}" for p in problems))
            if st.button("Dismiss", key="dismiss_launch_problems"):
                del st.session_state["launch_problems"]
                st.rerun()
            return
        if find_lr or check:
            prelaunch.start("lr_find" if find_lr else "check", jobs.find_lr(config) if find_lr else jobs.check(config),
                            config)
            st.rerun()
        if not launched:
            return
        run_id = store.create_run(config)
        jobs.submit(run_id)
        for key in ("clone_config", "form_draft", "lr_find_job_result", "check_job_result"):
            st.session_state.pop(key, None)
        st.session_state["form_version"] = version + 1
        shared.select_run(run_id)
        st.toast(f"Launched {run_id}")
        st.rerun()


# --- the runs table --------------------------------------------------------------------------------
def fmt_duration(seconds) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def draw_runs_table() -> None:
    """All runs, redrawn every shared.TABLE_TICK_S while one is active."""
    st.markdown("**All runs**")
    summaries = store.list_runs()
    if not summaries:
        st.caption("No runs yet.")
        return
    frame = shared.runs_frame(summaries).drop(columns=["error"])
    st.dataframe(frame, hide_index=True, key="train_runs_table", column_config=shared.RUNS_COLUMNS,
                 placeholder=shared.MISSING)


# --- the live view -------------------------------------------------------------------------------
def live_metrics(run_id: str) -> LiveMetrics:
    key = f"live:{run_id}"
    if key not in st.session_state:
        st.session_state[key] = LiveMetrics(store.metrics_path(run_id))
    live = st.session_state[key]
    live.refresh()
    return live


def progress_text(status: dict, config: RunConfig, live: LiveMetrics) -> str:
    step, total = status.get("step", 0), status.get("total_steps") or 0
    parts = [f"epoch {status.get('epoch', 0)}/{config.epochs}", f"step {step}/{total or '?'}"]
    rate = live.steps_per_second()
    if status["state"] == "running" and rate and total:
        eta = (total - step) / rate
        parts.append(f"ETA {fmt_duration(eta)}")
    return " · ".join(parts)


def draw_progress(run_id: str) -> None:
    """The run's state, progress and latest figures: small, redrawn every REFRESH_S while a run is
    active. Meanwhile also this page's check of the runs folder (shared.check_store): one fragment run
    instead of two."""
    shared.check_store()
    status = store.read_status(run_id)
    config = store.read_config(run_id)
    live = live_metrics(run_id)
    state = status["state"]
    total = status.get("total_steps") or 0
    fraction = 1.0 if state == "completed" else (min(1.0, status.get("step", 0) / total) if total else 0.0)
    st.progress(fraction, text=f"**{state}** · {progress_text(status, config, live)} · {fraction:.0%}")
    if status.get("error"):
        st.error(status["error"])
    if status.get("early_stopped_at"):
        st.info(f"Early stopping ended the run after epoch {status['early_stopped_at']}.")
    if status.get("skipped_images"):
        with st.expander(f"{status['skipped_images']:,} image file(s) left out of training: they cannot be read"):
            st.dataframe(pd.DataFrame(status.get("skipped_files") or [], columns=["file", "reason"]),
                         hide_index=True)
    cols = st.columns(4)
    val_acc, val_loss = live.last("val", "epoch", "acc"), live.last("val", "epoch", "loss")
    cols[0].metric("val acc", f"{val_acc:.4f}" if val_acc is not None else "–")
    cols[1].metric("val loss", f"{val_loss:.4f}" if val_loss is not None else "–")
    best = status.get("best") or {}
    cols[2].metric(f"best {best.get('metric', '').removeprefix('val_')}",
                   f"{best['value']:.4f}" if best else "–", help=f"epoch {best['epoch']}" if best else None)
    speed = live.last("train", "epoch", "samples_per_s") or live.last("train", "step", "samples_per_s")
    cols[3].metric("samples/s", f"{speed:,.0f}" if speed else "–")
    if not live.lines and state in ACTIVE_STATES:
        st.caption("Waiting for the first metrics…")
    if state not in ACTIVE_STATES and st.session_state.get(f"was_active:{run_id}"):
        st.session_state[f"was_active:{run_id}"] = False
        st.rerun(scope="app")     # turn the timer off and refresh the buttons
    if state in ACTIVE_STATES:
        st.session_state[f"was_active:{run_id}"] = True


def draw_curves(run_id: str, options: curves.ChartOptions) -> None:
    """The loss and accuracy chart and the diagnosis."""
    live = live_metrics(run_id)
    if not live.lines:
        return
    curves.draw_curves(run_id, live, options)
    draw_diagnosis(run_id, live, store.read_status(run_id), store.read_config(run_id))


def draw_rates(run_id: str, options: curves.ChartOptions) -> None:
    live = live_metrics(run_id)
    if live.lines:
        curves.draw_rates(run_id, live, options)


def draw_diagnosis(run_id: str, live: LiveMetrics, status: dict, config: RunConfig) -> None:
    """The run's findings in plain words, recomputed once per epoch (or when the run's state changes),
    not at every refresh: rebuilding rows from a long run's series is the costly part of a tick."""
    probes = shared.live_probes(run_id)
    epochs = len(live.series("val", "epoch", "loss")[0])
    key = (epochs, status["state"], status.get("diverged_at_step"))
    cached = st.session_state.get(f"diagnosis:{run_id}")
    if cached is None or cached[0] != key:
        cached = (key, diagnose(live.rows(), status, config.to_dict(), probes))
        st.session_state[f"diagnosis:{run_id}"] = cached
    findings = cached[1]
    st.markdown("**Diagnosis**")
    if not findings:
        st.caption("Nothing to report so far: no sign of divergence, stalled learning, a bad learning rate, "
                   "overfitting or odd data.")
    prelaunch.show_findings([finding.to_dict() for finding in findings])


def clone_into_form(config: RunConfig, run_id: str) -> None:
    """Button callback (runs before the widgets exist, so it may set their state): prefill the form.
    Values that do not fit their setting (a hand-edited config.json) are left at the defaults."""
    taken = {summary.name for summary in store.list_runs()}
    st.session_state["clone_config"] = {**config.to_dict(), "name": clone_name(config.name, taken)}
    st.session_state["clone_of"] = run_id
    st.session_state["clone_caution"] = None
    st.session_state["form_version"] = st.session_state.get("form_version", 0) + 1
    fits = {name: SETTINGS[name].problem(getattr(config, name)) is None for name in forms.DATA_FIELDS}
    if not fits["dataset"]:
        return
    st.session_state["ds_name"] = config.dataset
    for name, key in (("image_size", f"ds_size_{config.dataset}"), ("channels", f"ds_channels_{config.dataset}"),
                      ("data_path", "ds_path"), ("labels_csv", "ds_csv"), ("model", "ds_model")):
        if fits[name]:
            st.session_state[key] = getattr(config, name)


def run_actions(run_id: str, state: str) -> None:
    cols = st.columns([1, 1, 1, 1, 4])
    if cols[0].button("Stop", disabled=state not in ACTIVE_STATES, key="btn_stop"):
        jobs.stop(run_id)
        st.toast("Stopping after the current batch…")
        time.sleep(0.3)
        st.rerun()
    if cols[1].button("Resume", disabled=state not in RESUMABLE_STATES, key="btn_resume"):
        try:
            jobs.resume(run_id)
        except (RuntimeError, UnreadableRun) as error:    # another tab was quicker; a broken config
            st.error(f"Not resumed: {error}")
            return
        st.session_state.pop(f"live:{run_id}", None)
        st.rerun()
    try:
        config = store.read_config(run_id)
    except UnreadableRun:
        config = None
    cols[2].button("Clone", key="btn_clone", on_click=clone_into_form, args=(config, run_id),
                   disabled=config is None)
    with cols[3].popover("Delete", disabled=state in ACTIVE_STATES):
        st.write(f"Delete **{run_id}** and all its files?")
        if st.button("Yes, delete it", type="primary", key="btn_delete"):
            store.delete_run(run_id)
            st.session_state.pop(f"live:{run_id}", None)
            shared.select_run(None)
            st.rerun()


def live_view() -> None:
    """While runs are active the view ticks in fragments, each re-sending only its own elements at its
    own pace (the *_S constants above, shared.TABLE_TICK_S)."""
    run_id = shared.selected_run()
    active = shared.any_run_active()
    polled = False
    if run_id is not None:
        summary = store.summary(run_id)
        st.subheader(f"Run {shared.run_label(run_id)}")
        st.caption(run_id)
        for note in summary.notes:
            st.warning(note)
        run_actions(run_id, summary.state)
        if summary.state == UNREADABLE:
            st.error(f"This run folder cannot be read: {summary.error}")
        else:
            chosen_active = summary.state in ACTIVE_STATES
            st.fragment(run_every=REFRESH_S if active else None)(draw_progress)(run_id)
            polled = active
            # Outside the fragments: changing them reruns the page, so every chart follows at once.
            options = curves.chart_controls("chart")
            st.fragment(run_every=CURVES_TICK_S if chosen_active else None)(draw_curves)(run_id, options)
            st.fragment(run_every=RATES_TICK_S if chosen_active else None)(draw_rates)(run_id, options)
    st.fragment(run_every=shared.TABLE_TICK_S if active else None)(draw_runs_table)()
    if not polled:                 # nothing ticks here: the page's own check of the runs folder
        shared.watch_store()


launch_form()
live_view()
compare.compare_runs(store)
