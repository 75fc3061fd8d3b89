"""Compare, on the Train page: two or more runs' train and val curves overlaid, and the settings that differ."""
import pandas as pd
import streamlit as st

from core.analysis import plots
from core.runs.live import LiveMetrics
from core.runs.states import UNREADABLE
from pages.common import curves, shared

TRAIN_POINTS = {"epoch": "per epoch", "step": "per step", "none": "none"}


def run_metrics(run_id: str) -> LiveMetrics:
    """The run's metrics, only the lines appended since the last rerun read (a long run's file is not
    parsed again on every widget change)."""
    key = f"cmp_live:{run_id}"
    if key not in st.session_state:
        st.session_state[key] = LiveMetrics(shared.store().metrics_path(run_id))
    live = st.session_state[key]
    live.refresh()
    return live


def run_curves(run_id: str, metric: str, options: curves.ChartOptions, train_kind: str) -> tuple[dict, str]:
    """({split: (x, values)}, x axis title) of one run: train per step or per epoch, val per epoch."""
    live = run_metrics(run_id)
    x = curves.run_x_axis(run_id, live, options.x_axis)
    splits = {}
    if train_kind != "none":
        splits["train"] = curves.curve(live, x, "train", train_kind, metric)
    splits["val"] = curves.curve(live, x, "val", "epoch", metric)
    return splits, x.title


def compare_runs(store) -> None:
    runs = [s for s in shared.runs_in_view() if s.state != UNREADABLE]
    if len(runs) < 2:
        return
    labels = {s.run_id: s.label for s in runs}
    box = st.expander("Compare runs", key="compare_open", on_change="rerun")   # drawn only while open
    if not box.open:
        return
    with box:
        # The newest runs the sidebar search matches, and those already chosen.
        chosen_before = [r for r in st.session_state.get("cmp_runs", []) if r in labels]
        ids = list(dict.fromkeys(chosen_before + list(labels)[:shared.PICKER_LIMIT]))
        chosen = st.multiselect("Runs", ids, default=ids[:2], format_func=labels.get, key="cmp_runs")
        if len(chosen) < 2:
            st.caption("Pick two or more runs.")
            return
        cols = st.columns(2)
        metric = cols[0].radio("Metric", ("acc", "loss"), horizontal=True, key="cmp_metric")
        train_kind = cols[1].radio("Train curve", list(TRAIN_POINTS), format_func=TRAIN_POINTS.get,
                                   horizontal=True, key="cmp_train")
        options = curves.chart_controls("cmp", log_label="Log y axis")
        series, titles = {}, set()
        for run_id in chosen:
            name = shared.run_name(run_id)
            name = labels[run_id] if name in series else name      # two runs of one name stay apart
            series[name], title = run_curves(run_id, metric, options, train_kind)
            titles.add(title)
        # Runs whose epoch length is not known yet fall back to steps: then the axis says both.
        x_title = titles.pop() if len(titles) == 1 else " / ".join(sorted(titles))
        # Smoothing is for per-step curves: per-epoch points are already averages, drawn as they are.
        smoothing = options.smoothing if train_kind == "step" else 0.0
        st.plotly_chart(plots.compare_curves(series, metric, x_title, smoothing, options.log_y), key="cmp_chart")
        configs = {run_id: store.read_config(run_id).to_dict() for run_id in chosen}
        keys = [k for k in configs[chosen[0]] if len({repr(c[k]) for c in configs.values()}) > 1]
        if keys:
            st.dataframe(pd.DataFrame({run_id: [configs[run_id][k] for k in keys] for run_id in chosen}, index=keys)
                         .astype(str))
        else:
            st.caption("These runs have identical configs.")
