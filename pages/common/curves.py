"""A run's training curves on the Train page (loss and accuracy, learning rate, throughput) and the
chart controls people know from TensorBoard: x axis in steps, epochs or wall time, smoothing, a log
y axis. Compare uses the same controls (pages/common/compare.py)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from core.analysis import plots
from core.analysis.series import MAX_SMOOTHING, SMOOTHED_CURVES, X_AXES, XAxis, training_series
from core.runs.live import LiveMetrics
from pages.common import shared

DEFAULT_SMOOTHING = 0.6          # TensorBoard's default
KEPT = "chart_controls"          # the controls' values, kept where a page switch does not clear them
SMOOTHING_HELP = ("TensorBoard's smoothing: an exponential moving average of the per-step curves, debiased "
                  "at the start; the raw curve stays faint beneath. Per-epoch points are drawn as they are.")


@dataclass(frozen=True)
class ChartOptions:
    x_axis: str = "step"
    smoothing: float = DEFAULT_SMOOTHING
    log_y: bool = False


def chart_controls(prefix: str, log_label: str = "Log loss axis") -> ChartOptions:
    """The x axis, smoothing and log-axis controls, keyed `prefix_*`. Streamlit drops a widget's value
    when a page without it runs: the values live on in a plain key too, so they survive page switches."""
    defaults = {"x": "step", "smoothing": DEFAULT_SMOOTHING, "log": False}
    kept = st.session_state.setdefault(KEPT, {})
    keys = {name: f"{prefix}_{name}" for name in defaults}
    for name, key in keys.items():
        if key not in st.session_state:
            st.session_state[key] = kept.get(key, defaults[name])
    cols = st.columns([3, 3, 2], vertical_alignment="bottom")
    x_axis = cols[0].radio("x axis", list(X_AXES), format_func=X_AXES.get, horizontal=True, key=keys["x"])
    smoothing = cols[1].slider("Smoothing", 0.0, MAX_SMOOTHING, step=0.01, key=keys["smoothing"],
                               help=SMOOTHING_HELP)
    log_y = cols[2].toggle(log_label, key=keys["log"])
    for key in keys.values():
        kept[key] = st.session_state[key]
    return ChartOptions(x_axis, float(smoothing), bool(log_y))


def run_x_axis(run_id: str, live: LiveMetrics, axis: str) -> XAxis:
    """The chosen x axis for this run's curves; status.json is read only for an epoch axis before
    the first epoch has ended (it knows the steps per epoch)."""
    epoch_rows = live.series("train", "epoch", "epoch")
    if not len(epoch_rows[0]):
        epoch_rows = live.series("val", "epoch", "epoch")
    hint = None
    if axis == "epoch" and not len(epoch_rows[0]):
        hint = shared.store().read_status(run_id).get("steps_per_epoch")
    times = [live.series(split, kind, "time")[1] for split, kind in (("train", "step"), ("val", "epoch"))]
    return XAxis(axis, epoch_rows, times, hint)


def curve(live: LiveMetrics, x: XAxis, split: str, kind: str, field: str) -> tuple:
    """(x, values) of one series in the chosen x axis."""
    steps, values = live.series(split, kind, field)
    times = live.series(split, kind, "time")[1] if x.axis == "time" else None
    return x.of(steps, times), values


# The run's charts, in two groups the Train page refreshes at their own pace while the run trains:
# the loss and accuracy, and the learning rate and throughput (pages/train.py).
CURVES = ("curves",)
RATES = ("lr", "speed")


def run_figures(run_id: str, live: LiveMetrics, options: ChartOptions, names: tuple) -> tuple:
    """(x-axis fallback, {name: figure}) for the charts named, rebuilt only when the run has new lines
    or the controls changed: a refresh with nothing new re-sends the figures built last time."""
    key = f"run_charts:{run_id}:{','.join(names)}"
    cached = st.session_state.get(key)
    if cached is None or cached[0] != (options, live.lines):
        x = run_x_axis(run_id, live, options.x_axis)
        cached = ((options, live.lines), x.fallback, {name: _figure(name, live, x, options) for name in names})
        st.session_state[key] = cached
    return cached[1:]


def draw_curves(run_id: str, live: LiveMetrics, options: ChartOptions) -> None:
    fallback, figures = run_figures(run_id, live, options, CURVES)
    if fallback:
        st.caption(f"x axis in {fallback}.")
    st.plotly_chart(figures["curves"], key=f"curves_{run_id}")


def draw_rates(run_id: str, live: LiveMetrics, options: ChartOptions) -> None:
    figures = run_figures(run_id, live, options, RATES)[1]
    cols = st.columns(2)
    cols[0].plotly_chart(figures["lr"], key=f"lr_{run_id}")
    cols[1].plotly_chart(figures["speed"], key=f"speed_{run_id}")


def _figure(name: str, live: LiveMetrics, x: XAxis, options: ChartOptions):
    if name == "lr":
        lrs = {"lr": curve(live, x, "train", "step", "lr")}
        backbone = curve(live, x, "train", "step", "backbone_lr")
        if np.isfinite(backbone[1]).any():       # a pretrained backbone that trains: its own, lower lr
            lrs = {"head lr": lrs["lr"], "backbone lr": backbone}
        return plots.line_chart(lrs, "learning rate", x_title=x.title, log_y=True)
    if name == "speed":
        return plots.line_chart({"samples/s": curve(live, x, "train", "step", "samples_per_s")},
                                "throughput", x_title=x.title, smoothing=options.smoothing)
    series = training_series(live, lambda split, kind, metric: curve(live, x, split, kind, metric))
    return plots.training_curves(series, x.title, options.smoothing, smoothed=SMOOTHED_CURVES,
                                 log_loss=options.log_y)
