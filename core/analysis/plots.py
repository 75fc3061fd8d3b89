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


def _log_axis(title: str) -> dict:
    """A log axis labelled at each power of ten (10⁻³, 10⁻²): plotly's default labels its minor
    ticks with bare digits ("2", "5"), which read as values."""
    return _axis(title, type="log", dtick=1, exponentformat="power")


MAX_LOG_TICKS = 8
MIN_TICK_GAP = 0.08         # of the axis: a 12 px label needs ~14 px, and line_chart's plot area is ~175 px high
CONSTANT_SPAN = np.log10(4)  # a constant series is drawn across a factor of 4 around its value
MAX_BARE_END = 0.4           # of the axis, at either end, beyond the last label
EDGE_PAD = 0.04             # of the span, each side: a marker on the data's edge is not cut in half


def log_ticks(values) -> dict:
    """Range and ticks for a log axis over `values` (NaN, 0 and negatives left out): 2 to 8 labels inside
    the range, none closer than MIN_TICK_GAP of the axis, 3 or more where they fit. At 1-2-5 steps (0.2,
    0.5, 1, 2) where those fit, else at powers of ten (wide ranges), else at 1-2-3-5 or 1 to 9 (0.3 to
    0.9 holds no power of ten and one 1-2-5 step), else at even steps (0.0012, 0.0014: within a decade).
    The range is set here, not left to plotly's autorange, so that the ticks are known to lie in it; a
    constant series (a constant lr) gets a factor of 4 around its value."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return {"dtick": 1, "exponentformat": "power"}
    low, high = np.log10(values.min()), np.log10(values.max())
    if high - low < 1e-6:
        low, high = low - CONSTANT_SPAN / 2, high + CONSTANT_SPAN / 2
    pad = (high - low) * EDGE_PAD
    low, high = float(low - pad), float(high + pad)
    fitting = [ticks for ticks in _log_tick_candidates(low, high) if _ticks_fit(ticks, low, high)]
    chosen = min(fitting, key=lambda ticks: _tick_shortfall(ticks, low, high), default=[])   # the first best
    if not chosen or all(n == 1 for n, _ in chosen):      # powers of ten: plotly's own 10⁻³, as _log_axis
        step = chosen[1][1] - chosen[0][1] if len(chosen) >= 2 else 1
        return {"range": [low, high], "dtick": step, "exponentformat": "power"}
    exponent = any(not -4 <= _leading_exponent(n, k) < 6 for n, k in chosen)
    return {"range": [low, high], "tickvals": [float(f"{n}e{k}") for n, k in chosen],   # 0.3, not 0.30000000000000004
            "ticktext": [_tick_label(n, k, exponent) for n, k in chosen]}


def _log_tick_candidates(low: float, high: float):
    """Tick sets over [low, high] (log10 units), each a list of (n, k) meaning n * 10**k, in the order
    preferred: 1-2-5, powers of ten (every 1, 2, 3, 5, 10, ... decades, the first with at most
    MAX_LOG_TICKS), 1-2-3-5, 1 to 9, 1-2-4-6-8 (where 1 to 9 crowd), then even steps m * 10**k (m 5, 2,
    1) from coarse to fine."""
    decades = range(int(np.floor(low)), int(np.ceil(high)) + 1)

    def inside(ticks):
        return [(n, k) for n, k in ticks if low <= np.log10(n) + k <= high]

    yield inside((m, d) for d in decades for m in (1, 2, 5))
    powers = inside((1, d) for d in decades)
    for every in (1, 2, 3, 5) + tuple(10 ** p * s for p in range(1, 4) for s in (1, 2, 5)):
        spaced = [(n, k) for n, k in powers if k % every == 0]
        if len(spaced) <= MAX_LOG_TICKS:
            yield spaced
            break
    for mantissas in ((1, 2, 3, 5), tuple(range(1, 10)), (1, 2, 4, 6, 8)):
        yield inside((m, d) for d in decades for m in mantissas)
    if high - low >= 1:
        return
    bottom, top = 10 ** low, 10 ** high
    for k in range(int(np.floor(high)), int(np.floor(np.log10(top - bottom))) - 2, -1):
        for m in (5, 2, 1):
            step = m * 10.0 ** k
            if (top - bottom) / step > 4 * MAX_LOG_TICKS:       # finer steps only add more
                return
            first, last = int(np.floor(bottom / step)), int(np.ceil(top / step))
            yield inside((i * m, k) for i in range(max(first, 1), last + 1))


def _ticks_fit(ticks: list, low: float, high: float) -> bool:
    positions = [np.log10(n) + k for n, k in ticks]
    return 2 <= len(ticks) <= MAX_LOG_TICKS and min(np.diff(positions)) >= MIN_TICK_GAP * (high - low)


def _tick_shortfall(ticks: list, low: float, high: float) -> int:
    """0 for fitting ticks that leave neither end of the axis bare (0.0008 to 0.0015 labelled at 0.0008,
    0.0009, 0.001 leaves its top third bare) and are at least 3; 1 for 2 such, 2 for a bare end, 3 for both."""
    positions = [np.log10(n) + k for n, k in ticks]
    bare = max(positions[0] - low, high - positions[-1]) > MAX_BARE_END * (high - low)
    return 2 * bare + (len(ticks) < 3)


def _leading_exponent(n: int, k: int) -> int:
    return k + len(str(n)) - 1


def _tick_label(n: int, k: int, exponent: bool) -> str:
    """n * 10**k written exactly: 0.0012, 250, or with `exponent` 1.2e-5 (one style on an axis)."""
    while n % 10 == 0:
        n, k = n // 10, k + 1
    digits = str(n)
    if exponent:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{mantissa}e{_leading_exponent(n, k)}"
    if k >= 0:
        return digits + "0" * k
    digits = digits.rjust(1 - k, "0")
    return f"{digits[:k]}.{digits[k:]}"


def curve_traces(x, y, name: str, colour: str | None = None, smoothing: float = 0.0, markers: bool | None = None,
                 **extra) -> list[dict]:
    """One curve's traces: downsampled, then smoothed (core.analysis.series.ema_smooth) with the raw curve kept
    faint beneath it, as TensorBoard draws it. `markers`: None draws them on short curves only (a
    single point is invisible as a line)."""
    from core.analysis.series import ema_smooth
    x, y = downsample(np.asarray(x), np.asarray(y))
    markers = len(x) < 60 if markers is None else markers
    line = {"color": colour} if colour else {}
    extra_line = extra.pop("line", {})
    curve = {"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines+markers" if markers else "lines",
             "line": {**line, **extra_line}, **extra}
    if not smoothing or len(x) < 2:
        return [curve]
    raw = {**curve, "mode": "lines", "opacity": 0.25, "showlegend": False, "hoverinfo": "skip",
           "line": {**curve["line"], "width": 1}}
    return [raw, {**curve, "y": ema_smooth(y, smoothing)}]


def training_curves(series: dict[str, dict[str, tuple]], x_title: str = "step", smoothing: float = 0.0,
                    smoothed: tuple[str, ...] = (), log_loss: bool = False) -> go.Figure:
    """Loss and accuracy side by side. `series[metric][label] = (x, values)`, metric in loss/acc; the
    curves named in `smoothed` are smoothed by `smoothing` (0: raw)."""
    traces = []
    for axis, metric in (("", "loss"), ("2", "acc")):
        for label, (x, y) in series.get(metric, {}).items():
            traces += curve_traces(x, y, label, SPLIT_COLOURS.get(label.split()[0]),
                                   smoothing if label in smoothed else 0.0, xaxis=f"x{axis}", yaxis=f"y{axis}",
                                   legendgroup=label, showlegend=axis == "")
    loss_axis = _axis("loss")
    if log_loss:
        loss_axis.update(type="log", **log_ticks(np.concatenate(
            [np.asarray(y, dtype=float) for _, y in series.get("loss", {}).values()] or [np.array([])])))
    return _figure(traces, height=340,
                   xaxis=_axis(x_title, domain=[0, 0.46]), yaxis=loss_axis,
                   xaxis2=_axis(x_title, domain=[0.54, 1]), yaxis2=_axis("accuracy", anchor="x2"),
                   legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
                   margin={"l": 10, "r": 10, "t": 10, "b": 40})


def line_chart(series: dict[str, tuple], title: str, x_title: str = "step", y_title: str = "",
               log_y: bool = False, smoothing: float = 0.0) -> go.Figure:
    traces = []
    for i, (label, (x, y)) in enumerate(series.items()):       # a colour each: the raw curve keeps it
        traces += curve_traces(x, y, label, RUN_COLOURS[i % len(RUN_COLOURS)], smoothing=smoothing, markers=False)
    y_axis = _axis(y_title)
    if log_y:
        y_axis.update(type="log", **log_ticks(np.concatenate([np.asarray(y, dtype=float) for _, y in series.values()]
                                                             or [np.array([])])))
    return _figure(traces, title, height=280, xaxis=_axis(x_title), yaxis=y_axis)


RUN_COLOURS = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
               "#FF9DA6", "#BAB0AC")


def compare_curves(runs: dict[str, dict[str, tuple]], metric: str, x_title: str, smoothing: float = 0.0,
                   log_y: bool = False) -> go.Figure:
    """Several runs overlaid: `runs[run label][split] = (x, values)`, split train or val. A colour per
    run; train dashed (smoothed by `smoothing`), val solid with markers (a one-epoch run's single val
    point shows)."""
    traces, values = [], []
    for i, (label, splits) in enumerate(runs.items()):
        colour = RUN_COLOURS[i % len(RUN_COLOURS)]
        for split, (x, y) in splits.items():
            if not len(x):
                continue
            values.append(np.asarray(y, dtype=float))
            train = split == "train"
            traces += curve_traces(x, y, f"{label} · {split}", colour, smoothing if train else 0.0,
                                   markers=None if train else True, legendgroup=label,
                                   line={"dash": "dash" if train else "solid"})
    metric = {"acc": "accuracy"}.get(metric, metric)
    y_axis = _axis(metric)
    if log_y:
        y_axis.update(type="log", **log_ticks(np.concatenate(values) if values else []))
    return _figure(traces, f"{metric.capitalize()} of the chosen runs (train dashed, val solid)", height=380,
                   xaxis=_axis(x_title), yaxis=y_axis, legend={"orientation": "v", "x": 1.02, "y": 1})


def lr_finder_curve(curve: list[dict], suggested_lr: float) -> go.Figure:
    """The range test's smoothed loss against the learning rate (log axis), the suggestion marked."""
    lrs, losses = [p["lr"] for p in curve], [p["loss"] for p in curve]
    nearest = min(range(len(lrs)), key=lambda i: abs(np.log(lrs[i]) - np.log(suggested_lr)))
    traces = [{"type": "scatter", "x": lrs, "y": losses, "mode": "lines", "name": "smoothed loss"},
              {"type": "scatter", "x": [suggested_lr], "y": [losses[nearest]], "mode": "markers",
               "name": f"suggested lr {suggested_lr:.2g}", "marker": {"size": 12, "color": "#E45756"}}]
    return _figure(traces, "Learning-rate range test", height=300, xaxis=_log_axis("learning rate"),
                   yaxis=_axis("loss"))


def histogram_heatmap(steps: np.ndarray, edges: np.ndarray, counts: np.ndarray, title: str) -> go.Figure:
    """Histograms over time (TensorBoard's heat map): x the step, y the value, colour the share of the
    layer's values in that bin at that step."""
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    trace = {"type": "heatmap", "x": steps, "y": (edges[:-1] + edges[1:]) / 2, "z": shares.T,
             "colorscale": "Viridis", "colorbar": {"title": {"text": "share"}}}
    return _figure([trace], title, height=260, xaxis=_axis("step"), yaxis=_axis("value"), showlegend=False)


def gradient_flow(layers: list[str], grad_norms: list[float], weight_norms: list[float]) -> go.Figure:
    """Per-layer gradient and weight norms at one step, in model order, on a log axis."""
    traces = [{"type": "bar", "x": layers, "y": grad_norms, "name": "gradient norm", "marker": {"color": "#E45756"}},
              {"type": "scatter", "x": layers, "y": weight_norms, "name": "weight norm", "mode": "markers",
               "marker": {"color": "#4C78A8", "size": 9}}]
    return _figure(traces, "Gradient flow (input to output)", height=320,
                   xaxis=_axis("layer", type="category"), yaxis=_log_axis("norm"))


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


def thin(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced points of a curve, first and last kept (for ROC/PR: a drawing, not a figure)."""
    if len(x) <= max_points:
        return np.asarray(x), np.asarray(y)
    index = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return np.asarray(x)[index], np.asarray(y)[index]


# Chromium drew 100 classes' 10,000 invisible markers in ~0.5 s more than the heat map alone, 300 classes'
# 90,000 in ~10 s more: beyond this the pickers alone choose a cell.
MAX_CLICKABLE_CLASSES = 100


def confusion_heatmap(matrix: list[list[int]], classes: list[str], normalise: bool = False,
                      clickable: bool = False) -> go.Figure:
    """The confusion matrix as a heat map, true classes down, predicted across. `clickable` (up to
    MAX_CLICKABLE_CLASSES classes) lays an invisible marker on each cell's centre, point k on cell
    (k // n, k % n): plotly selects scatter points on a click but never heat-map cells, so a click
    reaches Streamlit's on_select only through them. The hover label moves to the markers and, with
    no hover cutoff, the nearest marker (the cell under the pointer) answers anywhere in the cell."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(1, keepdims=True), 1) if normalise else counts
    text = [[f"{v:.2f}" if normalise else f"{int(v)}" for v in row] for row in values]
    hover = "true %{y}<br>predicted %{x}<br>%{text}<extra></extra>"
    trace = {"type": "heatmap", "z": values, "x": classes, "y": classes, "colorscale": "Blues", "reversescale": True,
             "text": text, "texttemplate": "%{text}" if len(classes) <= 30 else "", "hovertemplate": hover}
    traces, layout = [trace], {}
    if clickable and len(classes) <= MAX_CLICKABLE_CLASSES:
        trace.pop("hovertemplate")
        trace["hoverinfo"] = "skip"
        traces.append({"type": "scatter", "mode": "markers", "x": [c for _ in classes for c in classes],
                       "y": [c for c in classes for _ in classes], "text": [t for row in text for t in row],
                       "marker": {"opacity": 0}, "hovertemplate": hover, "showlegend": False})
        layout["hoverdistance"] = -1
    size = min(700, 200 + 30 * len(classes))
    return _figure(traces, "Confusion matrix" + (" (row-normalised)" if normalise else ""), height=size,
                   xaxis=_axis("predicted", type="category", side="bottom"),
                   yaxis=_axis("true", type="category", autorange="reversed"), **layout)


def roc_figure(curves: dict, report: dict) -> go.Figure:
    classes = report["classes"]
    traces = [{"type": "scatter", "x": [0, 1], "y": [0, 1], "mode": "lines", "name": "chance",
               "line": {"dash": "dot", "color": "#999"}, "hoverinfo": "skip"}]
    for k, (fpr, tpr) in curves["roc"].items():
        fpr, tpr = thin(fpr, tpr)
        traces.append({"type": "scatter", "x": fpr, "y": tpr, "mode": "lines",
                       "name": f"{classes[k]} (AUC {report['per_class'][k]['roc_auc']:.3f})"})
    for name, key in (("micro", "roc_micro"), ("macro", "roc_macro")):
        x, y = thin(*curves[key])
        auc = report[name]["roc_auc"]
        traces.append({"type": "scatter", "x": x, "y": y, "mode": "lines", "line": {"width": 3, "dash": "dash"},
                       "name": f"{name} (AUC {auc:.3f})" if auc is not None else name})
    return _figure(traces, "ROC, one class against the rest", height=460, xaxis=_axis("false positive rate"),
                   yaxis=_axis("true positive rate"), legend={"orientation": "v", "x": 1.02, "y": 1})


def pr_figure(curves: dict, report: dict) -> go.Figure:
    classes, traces = report["classes"], []
    for k, (recall, precision) in curves["pr"].items():
        recall, precision = thin(recall, precision)
        row = report["per_class"][k]
        traces.append({"type": "scatter", "x": recall, "y": precision, "mode": "lines", "legendgroup": str(k),
                       "name": f"{classes[k]} (AP {row['average_precision']:.3f})"})
        best = row["best_f1_threshold"]
        if best:
            traces.append({"type": "scatter", "x": [best["recall"]], "y": [best["precision"]], "mode": "markers",
                           "legendgroup": str(k), "showlegend": False, "marker": {"size": 9, "symbol": "x"},
                           "hovertext": f"{classes[k]}: max F1 {best['f1']:.3f} at threshold {best['threshold']:.3f}",
                           "hoverinfo": "text"})
    return _figure(traces, "Precision-recall per class (x: max-F1 point)", height=460, xaxis=_axis("recall"),
                   yaxis=_axis("precision"), legend={"orientation": "v", "x": 1.02, "y": 1})


def reliability_figure(bins: list[dict], ece: float) -> go.Figure:
    traces = [{"type": "bar", "x": [(b["low"] + b["high"]) / 2 for b in bins], "y": [b["accuracy"] for b in bins],
               "width": [b["high"] - b["low"] for b in bins], "name": "accuracy", "marker": {"color": "#4C78A8"},
               "customdata": [b["count"] for b in bins],
               "hovertemplate": "confidence %{x:.2f}<br>accuracy %{y:.3f}<br>%{customdata} samples<extra></extra>"},
              {"type": "scatter", "x": [0, 1], "y": [0, 1], "mode": "lines", "name": "perfect calibration",
               "line": {"dash": "dot", "color": "#999"}}]
    return _figure(traces, f"Reliability (ECE {ece:.4f})", height=360, xaxis=_axis("confidence", range=[0, 1]),
                   yaxis=_axis("accuracy", range=[0, 1]))


def topk_bars(rows: list[dict]) -> go.Figure:
    trace = {"type": "bar", "x": [r["prob"] for r in rows][::-1], "y": [str(r["class"]) for r in rows][::-1],
             "orientation": "h", "marker": {"color": "#2F6FDE"}, "texttemplate": "%{x:.1%}", "textposition": "auto"}
    return _figure([trace], height=60 + 28 * len(rows), xaxis=_axis("probability", range=[0, 1]),
                   yaxis={"type": "category"}, showlegend=False, margin={"l": 10, "r": 10, "t": 10, "b": 10})


PROJECTOR_COLOURINGS = ("true class", "predicted class", "correct or not", "confidence")
MAX_LEGEND_CLASSES = 24       # beyond this many classes a map is coloured by a scale, without a legend


def projector_scatter(coords: np.ndarray, labels: np.ndarray, preds: np.ndarray, confidence: np.ndarray,
                      classes: list[str], colour: str, height: int = 620) -> go.Figure:
    """The projector's map, one WebGL marker per sample (thousands stay fluid): each point's
    customdata is its row in the embedding arrays, so a hover, a click or a lasso names the sample
    whatever trace it is in; the hover label says "true → predicted (confidence)", kept short: 50,000
    labels are most of what the browser is sent."""
    rows = np.arange(len(coords))
    names = [str(name) for name in classes]
    text = np.array([f"{names[t]} → {names[p]} ({c:.2f})"
                     for t, p, c in zip(labels.tolist(), preds.tolist(), confidence.tolist())], dtype=object)

    def points(mask, name: str, **marker) -> dict:
        return {"type": "scattergl", "mode": "markers", "name": name, "x": coords[mask, 0], "y": coords[mask, 1],
                "customdata": rows[mask], "text": text[mask], "hovertemplate": "#%{customdata}: %{text}<extra></extra>",
                "marker": {"size": 5, "opacity": 0.8, **marker}}

    every = np.ones(len(coords), dtype=bool)
    if colour == "correct or not":
        traces = [points(labels == preds, "correct", color="#9AA5B1"),
                  points(labels != preds, "wrong", color="#E45756")]
    elif colour == "confidence":
        traces = [points(every, "confidence", color=confidence, colorscale="Viridis", cmin=0, cmax=1,
                         colorbar={"title": {"text": "confidence"}, "thickness": 12})]
    else:
        values = labels if colour == "true class" else preds
        if len(classes) > MAX_LEGEND_CLASSES:
            traces = [points(every, colour, color=values, colorscale="Turbo", cmin=0, cmax=len(classes) - 1)]
        else:
            import plotly.colors
            palette = plotly.colors.qualitative.Dark24 if len(classes) > 10 else plotly.colors.qualitative.Plotly
            traces = [points(values == k, name, color=palette[k % len(palette)]) for k, name in enumerate(classes)]
    return _figure(traces, height=height, hoverdistance=-1, xaxis={"visible": False}, yaxis={"visible": False},
                   legend={"itemsizing": "constant", "title": {"text": colour}},
                   margin={"l": 10, "r": 10, "t": 40, "b": 10})        # the mode bar above the legend
