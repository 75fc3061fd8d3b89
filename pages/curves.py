"""A run's training curves on the Train page (loss and accuracy, learning rate, throughput) and the
chart controls people know from TensorBoard: x axis in steps, epochs or wall time, smoothing, a log
y axis. Compare uses the same controls (pages/compare.py)."""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core import plots
from core.live import LiveMetrics
from core.series import MAX_SMOOTHING, X_AXES, XAxis
from pages import shared

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


def draw_run_curves(run_id: str, live: LiveMetrics, rebuild: bool = True) -> None:
    """The run's charts. Without `rebuild` the figures drawn last time are drawn again (for the same
    controls): Streamlit sends an unchanged chart as a reference to the browser's copy, and the
    browser does not redraw it, where a chart with new points costs it a full Plotly redraw."""
    options = chart_controls("chart")
    cached = st.session_state.get(f"run_charts:{run_id}")
    if not rebuild and cached and cached[0] == options:
        _draw_figures(run_id, *cached[1:])
        return
    x = run_x_axis(run_id, live, options.x_axis)
    series = {"loss": {}, "acc": {}}
    for metric in ("loss", "acc"):
        for label, split, kind in (("train (steps)", "train", "step"), ("val (epochs)", "val", "epoch")):
            points = curve(live, x, split, kind, metric)
            if len(points[0]):
                series[metric][label] = points
    figures = (plots.training_curves(series, x.title, options.smoothing, smoothed=("train (steps)",),
                                     log_loss=options.log_y),
               plots.line_chart({"lr": curve(live, x, "train", "step", "lr")}, "learning rate",
                                x_title=x.title, log_y=True),
               plots.line_chart({"samples/s": curve(live, x, "train", "step", "samples_per_s")},
                                "throughput", x_title=x.title, smoothing=options.smoothing))
    st.session_state[f"run_charts:{run_id}"] = (options, x.fallback, figures)
    _draw_figures(run_id, x.fallback, figures)


def _draw_figures(run_id: str, fallback: str | None, figures: tuple) -> None:
    if fallback:
        st.caption(f"x axis in {fallback}.")
    curves_figure, lr_figure, speed_figure = figures
    st.plotly_chart(curves_figure, key=f"curves_{run_id}")
    cols = st.columns(2)
    cols[0].plotly_chart(lr_figure, key=f"lr_{run_id}")
    cols[1].plotly_chart(speed_figure, key=f"speed_{run_id}")
