"""Train: a form launches a run; a live view follows the chosen run; stop, resume, clone, delete, compare."""
import dataclasses
import time

import pandas as pd
import streamlit as st

from core import plots
from core.config import MODELS, OPTIMIZERS, SCHEDULERS, RunConfig
from core.data import validate_run_config
from core.live import LiveMetrics
from core.store import ACTIVE_STATES, RESUMABLE_STATES
from pages import shared

shared.ensure_app_navigation()

REFRESH_S = 1.0

st.title("Train")
store, jobs = shared.store(), shared.jobs()


# --- the launch form -----------------------------------------------------------------------------
def launch_form() -> None:
    version = st.session_state.setdefault("form_version", 0)   # bumped by Clone to reset the widgets
    with st.expander("New run", expanded=not store.run_ids() or bool(st.session_state.get("clone_config"))):
        if st.session_state.get("clone_config"):
            st.info(f"Prefilled from {st.session_state.get('clone_of')}. Change what you like and launch.")
        data = shared.dataset_picker(st.container(border=True))
        clone = st.session_state.get("clone_config")
        base = RunConfig.from_dict(clone) if clone else RunConfig.for_dataset(data.dataset)
        c = dataclasses.replace(base, dataset=data.dataset, data_path=data.data_path, labels_csv=data.labels_csv,
                                image_size=data.image_size, channels=data.channels)
        k = lambda name: f"tf_{name}_{version}"  # noqa: E731
        with st.form("launch"):
            cols = st.columns(4)
            name = cols[0].text_input("Run name", c.name, key=k("name"), placeholder="optional")
            model = cols[1].selectbox("Model", MODELS, MODELS.index(c.model), key=k("model"))
            epochs = cols[2].number_input("Epochs", value=c.epochs, step=1, key=k("epochs"))
            batch_size = cols[3].number_input("Batch size", value=c.batch_size, step=1, key=k("bs"))
            cols = st.columns(4)
            optimizer = cols[0].selectbox("Optimizer", OPTIMIZERS, OPTIMIZERS.index(c.optimizer), key=k("opt"))
            lr = cols[1].number_input("Learning rate", value=c.lr, format="%.5f", step=1e-4, key=k("lr"))
            weight_decay = cols[2].number_input("Weight decay", value=c.weight_decay, format="%.5f", key=k("wd"))
            momentum = cols[3].number_input("Momentum (sgd)", value=c.momentum, key=k("mom"))
            cols = st.columns(4)
            scheduler = cols[0].selectbox("LR schedule", SCHEDULERS, SCHEDULERS.index(c.scheduler), key=k("sch"))
            step_size = cols[1].number_input("Step size (epochs)", value=c.step_size, key=k("ss"))
            gamma = cols[2].number_input("Decay factor", value=c.gamma, key=k("gamma"))
            label_smoothing = cols[3].number_input("Label smoothing", value=c.label_smoothing, key=k("ls"))
            cols = st.columns(4)
            aug_random_crop = cols[0].checkbox("Random crop", c.aug_random_crop, key=k("crop"))
            aug_flip = cols[1].checkbox("Horizontal flip", c.aug_flip, key=k("flip"))
            aug_rotation = cols[2].number_input("Rotation (degrees)", value=c.aug_rotation, key=k("rot"))
            aug_color_jitter = cols[3].number_input("Colour jitter", value=c.aug_color_jitter, key=k("jit"))
            with st.expander("More settings"):
                cols = st.columns(4)
                class_weighted_loss = cols[0].checkbox("Class-weighted loss", c.class_weighted_loss, key=k("cw"))
                mixed_precision = cols[1].checkbox("Mixed precision (CUDA)", c.mixed_precision, key=k("amp"))
                early = cols[2].number_input("Early-stopping patience (0 = off)", value=c.early_stopping_patience,
                                             key=k("es"))
                grad_clip = cols[3].number_input("Gradient clipping (0 = off)", value=c.grad_clip, key=k("gc"))
                cols = st.columns(4)
                val_fraction = cols[0].number_input("Validation fraction", value=c.val_fraction, key=k("vf"))
                test_fraction = cols[1].number_input("Test fraction", value=c.test_fraction, key=k("tf"))
                seed = cols[2].number_input("Seed", value=c.seed, step=1, key=k("seed"))
                device = cols[3].selectbox("Device", ("auto", "cpu", "cuda"), ("auto", "cpu", "cuda").index(c.device),
                                           key=k("dev"))
                cols = st.columns(4)
                log_interval = cols[0].number_input("Log every N steps", value=c.log_interval, step=1, key=k("li"))
                best_metric = cols[1].selectbox("Best checkpoint by", ("val_acc", "val_loss"),
                                                ("val_acc", "val_loss").index(c.best_metric), key=k("bm"))
            launched = st.form_submit_button("Launch", type="primary")
        if not launched:
            return
        config = RunConfig(
            dataset=c.dataset, data_path=c.data_path, labels_csv=c.labels_csv, image_size=c.image_size,
            channels=c.channels, name=name.strip(), model=model, epochs=int(epochs), batch_size=int(batch_size),
            optimizer=optimizer, lr=float(lr), weight_decay=float(weight_decay), momentum=float(momentum),
            scheduler=scheduler, step_size=int(step_size), gamma=float(gamma), label_smoothing=float(label_smoothing),
            aug_random_crop=aug_random_crop, aug_flip=aug_flip, aug_rotation=float(aug_rotation),
            aug_color_jitter=float(aug_color_jitter), class_weighted_loss=class_weighted_loss,
            mixed_precision=mixed_precision, early_stopping_patience=int(early), grad_clip=float(grad_clip),
            val_fraction=float(val_fraction), test_fraction=float(test_fraction), seed=int(seed), device=device,
            log_interval=int(log_interval), best_metric=best_metric, num_workers=c.num_workers)
        problems = validate_run_config(config)
        if problems:
            st.error("Nothing was launched. Please fix:\n" + "\n".join(f"- {p}" for p in problems))
            return
        run_id = store.create_run(config)
        jobs.submit(run_id)
        st.session_state.pop("clone_config", None)
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


def runs_table() -> None:
    summaries = store.list_runs()
    if not summaries:
        st.caption("No runs yet.")
        return
    frame = shared.runs_frame(summaries).drop(columns=["error"])
    st.dataframe(frame, hide_index=True, key="train_runs_table", column_config=shared.RUNS_COLUMNS)


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


def draw_live(run_id: str) -> None:
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
    cols = st.columns(4)
    val_acc, val_loss = live.last("val", "epoch", "acc"), live.last("val", "epoch", "loss")
    cols[0].metric("val acc", f"{val_acc:.4f}" if val_acc is not None else "–")
    cols[1].metric("val loss", f"{val_loss:.4f}" if val_loss is not None else "–")
    best = status.get("best") or {}
    cols[2].metric(f"best {best.get('metric', '').removeprefix('val_')}",
                   f"{best['value']:.4f}" if best else "–", help=f"epoch {best['epoch']}" if best else None)
    speed = live.last("train", "epoch", "samples_per_s") or live.last("train", "step", "samples_per_s")
    cols[3].metric("samples/s", f"{speed:,.0f}" if speed else "–")
    series = {"loss": {}, "acc": {}}
    for metric in ("loss", "acc"):
        x, y = live.series("train", "step", metric)
        if len(x):
            series[metric]["train (steps)"] = (x, y)
        x, y = live.series("val", "epoch", metric)
        if len(x):
            series[metric]["val (epochs)"] = (x, y)
    if live.lines:
        st.plotly_chart(plots.training_curves(series), key=f"curves_{run_id}")
        cols = st.columns(2)
        cols[0].plotly_chart(plots.line_chart({"lr": live.series("train", "step", "lr")}, "learning rate",
                                              log_y=True), key=f"lr_{run_id}")
        cols[1].plotly_chart(plots.line_chart({"samples/s": live.series("train", "step", "samples_per_s")},
                                              "throughput"), key=f"speed_{run_id}")
    elif state in ACTIVE_STATES:
        st.caption("Waiting for the first metrics…")
    if state not in ACTIVE_STATES and st.session_state.get(f"was_active:{run_id}"):
        st.session_state[f"was_active:{run_id}"] = False
        st.rerun(scope="app")     # turn the timer off and refresh the buttons
    if state in ACTIVE_STATES:
        st.session_state[f"was_active:{run_id}"] = True


def clone_into_form(run_id: str) -> None:
    """Button callback (runs before the widgets exist, so it may set their state): prefill the form."""
    config = store.read_config(run_id)
    st.session_state["clone_config"] = config.to_dict()
    st.session_state["clone_of"] = run_id
    st.session_state["form_version"] = st.session_state.get("form_version", 0) + 1
    st.session_state["ds_name"] = config.dataset
    st.session_state[f"ds_size_{config.dataset}"] = config.image_size
    st.session_state[f"ds_channels_{config.dataset}"] = config.channels
    st.session_state["ds_path"] = config.data_path
    st.session_state["ds_csv"] = config.labels_csv


def run_actions(run_id: str, state: str) -> None:
    cols = st.columns([1, 1, 1, 1, 4])
    if cols[0].button("Stop", disabled=state not in ACTIVE_STATES, key="btn_stop"):
        jobs.stop(run_id)
        st.toast("Stopping after the current batch…")
        time.sleep(0.3)
        st.rerun()
    if cols[1].button("Resume", disabled=state not in RESUMABLE_STATES, key="btn_resume"):
        jobs.resume(run_id)
        st.session_state.pop(f"live:{run_id}", None)
        st.rerun()
    cols[2].button("Clone", key="btn_clone", on_click=clone_into_form, args=(run_id,))
    with cols[3].popover("Delete", disabled=state in ACTIVE_STATES):
        st.write(f"Delete **{run_id}** and all its files?")
        if st.button("Yes, delete it", type="primary", key="btn_delete"):
            store.delete_run(run_id)
            st.session_state.pop(f"live:{run_id}", None)
            shared.select_run(None)
            st.rerun()


def live_view() -> None:
    run_id = shared.selected_run()
    if run_id is None:
        return
    st.subheader(f"Run {shared.run_label(run_id)}")
    st.caption(run_id)
    state = store.read_status(run_id)["state"]
    run_actions(run_id, state)
    refresh = st.fragment(run_every=REFRESH_S if state in ACTIVE_STATES else None)(draw_live)
    refresh(run_id)


# --- compare -----------------------------------------------------------------------------------
def compare() -> None:
    ids = store.run_ids()
    if len(ids) < 2:
        return
    with st.expander("Compare runs"):
        chosen = st.multiselect("Runs", ids, default=ids[:2], format_func=shared.run_name, key="cmp_runs")
        if len(chosen) < 2:
            st.caption("Pick two or more runs.")
            return
        metric = st.radio("Metric", ("acc", "loss"), horizontal=True, key="cmp_metric")
        series = {}
        for run_id in chosen:
            rows = [r for r in store.read_metrics(run_id) if r.get("split") == "val"]
            series[shared.run_name(run_id)] = ([r["epoch"] for r in rows], [r[metric] for r in rows])
        st.plotly_chart(plots.line_chart(series, f"val {metric}", x_title="epoch"), key="cmp_chart")
        configs = {run_id: store.read_config(run_id).to_dict() for run_id in chosen}
        keys = [k for k in configs[chosen[0]] if len({repr(c[k]) for c in configs.values()}) > 1]
        if keys:
            st.dataframe(pd.DataFrame({run_id: [configs[run_id][k] for k in keys] for run_id in chosen}, index=keys)
                         .astype(str))
        else:
            st.caption("These runs have identical configs.")


launch_form()
runs_table()
live_view()
compare()
