"""Curve maths for the charts: TensorBoard's smoothing, and x axes in steps, epochs or wall time.

Applied to the few thousand points a chart draws (after core.analysis.plots.downsample), so a live refresh
stays cheap however long the run.
"""
from __future__ import annotations

import numpy as np

X_AXES = {"step": "step", "epoch": "epoch", "time": "wall time"}     # choice -> what a person reads
MAX_SMOOTHING = 0.99
# Wall time is shown in the largest unit that still gives readable numbers: (up to this span, unit, seconds).
TIME_UNITS = ((120, "s", 1.0), (2 * 3600, "min", 60.0), (float("inf"), "h", 3600.0))
# A run's loss and accuracy chart: (legend label, split, kind of row) of each curve; the per-step curve
# is the one smoothing applies to.
TRAINING_CURVES = (("train (steps)", "train", "step"), ("val (epochs)", "val", "epoch"))
SMOOTHED_CURVES = ("train (steps)",)


def training_series(live, points=None) -> dict:
    """{"loss": {label: (x, values)}, "acc": {...}} of a run's metrics (a core.runs.live.LiveMetrics), as
    core.analysis.plots.training_curves takes them; curves without points are left out. `points(split, kind,
    metric)` gives a curve in another x axis (default: steps)."""
    points = points or live.series
    series = {"loss": {}, "acc": {}}
    for metric in series:
        for label, split, kind in TRAINING_CURVES:
            x, values = points(split, kind, metric)
            if len(x):
                series[metric][label] = (x, values)
    return series


def ema_smooth(values, weight: float) -> np.ndarray:
    """TensorBoard's scalar smoothing: an exponential moving average, debiased so that the first
    points are not pulled towards zero (`last / (1 - weight**n)` after n finite points). Non-finite
    points (a NaN loss) are kept as they are and do not enter the average.

    >>> ema_smooth([1.0, 2.0, 3.0], 0.5).round(4).tolist()
    [1.0, 1.6667, 2.4286]
    """
    values = np.asarray(values, dtype=float)
    if not 0 <= weight <= MAX_SMOOTHING:
        raise ValueError(f"smoothing must be between 0 and {MAX_SMOOTHING}, got {weight}")
    if weight == 0 or not len(values):
        return values.copy()
    finite = np.isfinite(values)
    kept = values[finite]
    # A plain loop: the drawn series has at most a few thousand points (0.3 ms for 2,000), and
    # scipy.signal.lfilter, the vector form, costs a second to import.
    last, smoothed = 0.0, np.empty(len(kept))
    for i, value in enumerate(kept.tolist()):
        last = weight * last + (1 - weight) * value
        smoothed[i] = last
    out = values.copy()
    out[finite] = smoothed / (1 - weight ** np.arange(1, len(kept) + 1))
    return out


def steps_per_epoch(steps, epochs) -> float | None:
    """Optimizer steps per epoch, from epoch-end rows (their step and epoch): None before the first."""
    steps, epochs = np.asarray(steps, dtype=float), np.asarray(epochs, dtype=float)
    ok = np.isfinite(steps) & np.isfinite(epochs) & (epochs > 0)
    if not ok.any():
        return None
    return float(steps[ok][-1] / epochs[ok][-1])


def time_unit(span_s: float) -> tuple[str, float]:
    """(unit, seconds per unit) for a wall-time axis spanning `span_s` seconds."""
    return next((unit, scale) for limit, unit, scale in TIME_UNITS if span_s <= limit)


def x_values(axis: str, steps, times=None, per_epoch: float | None = None, start_time: float | None = None,
             time_scale: float = 1.0) -> np.ndarray:
    """A series' x in the chosen axis: the step; the epoch, fractional within one (step / steps per
    epoch, so an epoch-end point lands on its whole epoch); or the wall time since `start_time`
    (seconds divided by `time_scale`)."""
    if axis == "step":
        return np.asarray(steps, dtype=float)
    if axis == "epoch":
        if not per_epoch:
            raise ValueError("an epoch axis needs the steps per epoch")
        return np.asarray(steps, dtype=float) / per_epoch
    if axis == "time":
        times = np.asarray(times, dtype=float)
        return (times - (start_time if start_time is not None else np.nanmin(times))) / time_scale
    raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, got {axis!r}")


def axis_title(axis: str, unit: str = "s") -> str:
    return f"wall time ({unit})" if axis == "time" else X_AXES[axis]


class XAxis:
    """One chart's x axis for one run: converts its series' steps (and times) to the chosen axis.
    An epoch axis needs the steps per epoch (from the epoch-end rows, else `per_epoch_hint`, the
    status's); without them it falls back to steps and says so in `fallback`."""

    def __init__(self, axis: str, epoch_rows: tuple = ((), ()), times: list = (), per_epoch_hint=None):
        if axis not in X_AXES:
            raise ValueError(f"x axis must be one of {', '.join(X_AXES)}, got {axis!r}")
        self.fallback = None
        self.per_epoch = steps_per_epoch(*epoch_rows) or per_epoch_hint or None
        if axis == "epoch" and not self.per_epoch:
            axis, self.fallback = "step", "steps (the steps per epoch are not known yet)"
        starts = [float(np.nanmin(t)) for t in times if len(t) and np.isfinite(t).any()]
        ends = [float(np.nanmax(t)) for t in times if len(t) and np.isfinite(t).any()]
        if axis == "time" and not starts:
            axis, self.fallback = "step", "steps (these metrics carry no time)"
        self.axis = axis
        self.start_time = min(starts) if starts else None
        self.unit, self.time_scale = time_unit(max(ends) - self.start_time) if starts else ("s", 1.0)

    @property
    def title(self) -> str:
        return axis_title(self.axis, self.unit)

    def of(self, steps, times=None) -> np.ndarray:
        return x_values(self.axis, steps, times, self.per_epoch, self.start_time, self.time_scale)
