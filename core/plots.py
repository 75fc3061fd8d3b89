"""Pure functions: data -> plotly Figure. No I/O, no Streamlit; the pages only display the result."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

SPLIT_COLOURS = {"train": "#4C78A8", "val": "#F58518", "test": "#54A24B"}
MAX_POINTS = 2000


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` points: bucket means keep the curve's shape, the last point is kept."""
    n = len(x)
    if n <= max_points:
        return np.asarray(x), np.asarray(y)
    edges = np.linspace(0, n, max_points + 1).astype(int)
    counts = np.diff(edges)
    y_means = np.add.reduceat(np.asarray(y, dtype=float), edges[:-1]) / counts
    x_last = np.asarray(x)[edges[1:] - 1]
    return x_last, y_means


def _layout(fig: go.Figure, title: str | None = None, height: int = 320) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=10, r=10, t=50 if title else 10, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=1, xanchor="right"),
                      template="plotly_white")
    return fig


def training_curves(series: dict[str, dict[str, tuple]]) -> go.Figure:
    """Loss and accuracy side by side. `series[metric][label] = (steps, values)`, metric in loss/acc."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08)
    for col, metric in enumerate(("loss", "acc"), start=1):
        for label, (x, y) in series.get(metric, {}).items():
            x, y = downsample(np.asarray(x), np.asarray(y))
            split = label.split()[0]
            fig.add_trace(go.Scatter(x=x, y=y, name=label, mode="lines+markers" if len(x) < 60 else "lines",
                                     line=dict(color=SPLIT_COLOURS.get(split)), legendgroup=label,
                                     showlegend=col == 1), row=1, col=col)
        fig.update_xaxes(title_text="step", row=1, col=col)
    _layout(fig)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), margin=dict(b=40))
    return fig


def line_chart(series: dict[str, tuple], title: str, x_title: str = "step", y_title: str = "",
               log_y: bool = False) -> go.Figure:
    fig = go.Figure()
    for label, (x, y) in series.items():
        x, y = downsample(np.asarray(x), np.asarray(y))
        fig.add_trace(go.Scatter(x=x, y=y, name=label, mode="lines"))
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title, type="log" if log_y else "linear")
    return _layout(fig, title, height=280)


def class_balance(classes: list[str], counts: dict[str, list[int]]) -> go.Figure:
    fig = go.Figure()
    for split, values in counts.items():
        fig.add_trace(go.Bar(x=classes, y=values, name=split, marker_color=SPLIT_COLOURS.get(split)))
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="samples")
    return _layout(fig, "Class balance per split")


def histogram_bars(edges: np.ndarray, counts: np.ndarray, title: str) -> go.Figure:
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centres, y=counts, width=np.diff(edges), marker_color="#4C78A8"))
    fig.update_xaxes(title_text="weight value")
    fig.update_yaxes(title_text="count")
    return _layout(fig, title, height=260)
