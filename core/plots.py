"""Pure functions: data -> plotly Figure. No I/O, no Streamlit; the pages only display the result."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
MAX_POINTS = 2000


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points: bucket means keep the curve's shape; the latest point is kept
    as it is, so a live curve ends at the newest value."""
    n = len(x)
    if n <= max_points:
        return np.asarray(x), np.asarray(y)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    edges = np.linspace(0, n - 1, max_points).astype(int)
    counts = np.diff(edges)
    x_means = np.add.reduceat(x[:-1], edges[:-1]) / counts
    y_means = np.add.reduceat(y[:-1], edges[:-1]) / counts
    return np.append(x_means, x[-1]), np.append(y_means, y[-1])


def _figure(traces: list[dict], title: str | None = None, height: int = 320, **layout) -> go.Figure:
    """A Figure built from plain dicts without plotly's validation. Validation made a live refresh
    of three charts cost ~80 ms (bench/live_refresh.py); these dicts are fixed by this module and
    checked by the tests and the browser."""
    base = {"height": height, "margin": {"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
            "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 1, "xanchor": "right"},
            "template": _template()}
    if title:
        base["title"] = {"text": title}
    base.update(layout)
    return go.Figure({"data": traces, "layout": base}, _validate=False)


_TEMPLATE: dict = {}


def _template() -> dict:
    if not _TEMPLATE:
        import plotly.io as pio
        _TEMPLATE.update(pio.templates["plotly_white"].to_plotly_json())
    return _TEMPLATE


def _axis(title: str, **extra) -> dict:
    return {"title": {"text": title}, **extra}


def training_curves(series: dict[str, dict[str, tuple]]) -> go.Figure:
    """Loss and accuracy side by side. `series[metric][label] = (steps, values)`, metric in loss/acc."""
    traces = []
    for axis, metric in (("", "loss"), ("2", "acc")):
        for label, (x, y) in series.get(metric, {}).items():
            x, y = downsample(np.asarray(x), np.asarray(y))
            traces.append({"type": "scatter", "x": x, "y": y, "name": label, "xaxis": f"x{axis}", "yaxis": f"y{axis}",
                           "mode": "lines+markers" if len(x) < 60 else "lines", "legendgroup": label,
                           "showlegend": axis == "", "line": {"color": SPLIT_COLOURS.get(label.split()[0])}})
    return _figure(traces, height=340,
                   xaxis=_axis("step", domain=[0, 0.46]), yaxis=_axis("loss"),
                   xaxis2=_axis("step", domain=[0.54, 1]), yaxis2=_axis("accuracy", anchor="x2"),
                   legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
                   margin={"l": 10, "r": 10, "t": 10, "b": 40})


def line_chart(series: dict[str, tuple], title: str, x_title: str = "step", y_title: str = "",
               log_y: bool = False) -> go.Figure:
    traces = []
    for label, (x, y) in series.items():
        x, y = downsample(np.asarray(x), np.asarray(y))
        traces.append({"type": "scatter", "x": x, "y": y, "name": label, "mode": "lines"})
    return _figure(traces, title, height=280, xaxis=_axis(x_title),
                   yaxis=_axis(y_title, type="log" if log_y else "linear"))


def class_balance(classes: list[str], counts: dict[str, list[int]]) -> go.Figure:
    traces = [{"type": "bar", "x": classes, "y": values, "name": split,
               "marker": {"color": SPLIT_COLOURS.get(split)}} for split, values in counts.items()]
    return _figure(traces, "Class balance per split", barmode="group",
                   xaxis=_axis("class", type="category"), yaxis=_axis("samples"))


def histogram_bars(edges: np.ndarray, counts: np.ndarray, title: str) -> go.Figure:
    centres = (edges[:-1] + edges[1:]) / 2
    trace = {"type": "bar", "x": centres, "y": counts, "width": np.diff(edges), "marker": {"color": "#4C78A8"}}
    return _figure([trace], title, height=260, xaxis=_axis("weight value"), yaxis=_axis("count"),
                   showlegend=False)
