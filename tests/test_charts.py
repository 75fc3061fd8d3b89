"""Chart controls: TensorBoard's smoothing against a hand computation, step/epoch/time axes, legible
log axes, Compare's train and val overlay (a one-epoch run included), and the controls on the pages."""
import base64
import json
import math
import time

import numpy as np
import pytest

from conftest import no_errors
from core.analysis import plots
from core.analysis.series import XAxis, ema_smooth, steps_per_epoch, time_unit, x_values
from pages.common.site import page_path


# --- smoothing -------------------------------------------------------------------------------------
def test_smoothing_matches_a_hand_computation():
    # w = 0.6: last_1 = 0.4 * 2 = 0.8, debiased by 1 - 0.6 = 0.4 -> 2;
    # last_2 = 0.6 * 0.8 + 0.4 * 4 = 2.08, by 1 - 0.36 = 0.64 -> 3.25;
    # last_3 = 0.6 * 2.08 + 0.4 * 1 = 1.648, by 1 - 0.216 = 0.784 -> 2.1020408...
    assert ema_smooth([2.0, 4.0, 1.0], 0.6) == pytest.approx([2.0, 3.25, 1.648 / 0.784])


def test_smoothing_skips_non_finite_points_and_keeps_them():
    # The NaN stays where it is and does not enter the average: the 3 is the second point averaged.
    smoothed = ema_smooth([1.0, math.nan, 3.0, math.inf], 0.5)
    assert smoothed[0] == 1.0 and math.isnan(smoothed[1]) and math.isinf(smoothed[3])
    assert smoothed[2] == pytest.approx((0.5 * 0.5 + 0.5 * 3.0) / 0.75)


def test_smoothing_off_constant_and_bad_weights():
    values = np.array([3.0, 1.0, 2.0])
    assert ema_smooth(values, 0.0).tolist() == values.tolist()
    assert ema_smooth(np.full(50, 0.25), 0.9) == pytest.approx(np.full(50, 0.25))   # debiasing: no ramp from 0
    assert len(ema_smooth([], 0.5)) == 0
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="smoothing must be between 0 and 0.99"):
            ema_smooth(values, bad)


# --- x axes --------------------------------------------------------------------------------------
def test_x_axes_in_steps_epochs_and_wall_time():
    steps, times = np.array([10, 20, 40]), np.array([100.0, 130.0, 220.0])
    assert x_values("step", steps).tolist() == [10, 20, 40]
    assert x_values("epoch", steps, per_epoch=20).tolist() == [0.5, 1.0, 2.0]     # an epoch end on its epoch
    assert x_values("time", steps, times, start_time=100.0, time_scale=60.0).tolist() == [0.0, 0.5, 2.0]
    with pytest.raises(ValueError, match="x axis must be one of step, epoch, time"):
        x_values("hours", steps)
    assert steps_per_epoch([25, 50], [1, 2]) == 25 and steps_per_epoch([], []) is None
    assert time_unit(90) == ("s", 1.0) and time_unit(600) == ("min", 60.0) and time_unit(3 * 3600) == ("h", 3600.0)


def test_an_x_axis_knows_what_it_lacks():
    axis = XAxis("epoch", ([30, 60], [1, 2]), [np.array([5.0, 50.0])])
    assert axis.title == "epoch" and axis.of([15, 60]).tolist() == [0.5, 2.0] and axis.fallback is None
    early = XAxis("epoch", ([], []), [], per_epoch_hint=None)          # no epoch has ended, no status hint
    assert early.axis == "step" and "not known" in early.fallback
    assert XAxis("epoch", ([], []), [], per_epoch_hint=40).of([20]).tolist() == [0.5]
    timed = XAxis("time", ([], []), [np.array([1000.0, 1500.0]), np.array([1200.0])])
    assert timed.title == "wall time (min)" and timed.of([1, 2], [1000.0, 1300.0]).tolist() == [0.0, 5.0]


# --- figures -------------------------------------------------------------------------------------
def test_smoothed_curve_drawn_over_a_faint_raw_one_from_the_downsampled_points():
    x = np.arange(100_000)
    y = 1 / (1 + x / 1000) + np.random.default_rng(0).normal(0, 0.05, len(x))
    raw, smooth = plots.curve_traces(x, y, "train (steps)", "#123456", smoothing=0.9)
    assert len(raw["x"]) <= plots.MAX_POINTS + 1                  # smoothing ran on the drawn points only
    assert raw["opacity"] < 0.5 and raw["showlegend"] is False and "opacity" not in smooth
    assert np.allclose(smooth["y"], ema_smooth(raw["y"], 0.9))
    assert np.std(np.diff(smooth["y"])) < np.std(np.diff(raw["y"])) / 3    # it is smoother
    assert len(plots.curve_traces(x, y, "train", smoothing=0.0)) == 1      # off: the raw curve alone
    lr = plots.line_chart({"lr": (x, y)}, "learning rate", smoothing=0.5)
    assert lr.data[0].line.color == lr.data[1].line.color                   # the faint curve is the same one


def test_training_curves_smooth_only_the_named_curves_and_take_a_log_loss_axis():
    series = {"loss": {"train (steps)": (np.arange(1, 200), np.linspace(0.9, 0.3, 199)),
                       "val (epochs)": ([1, 2], [0.8, 0.4])},
              "acc": {"train (steps)": (np.arange(1, 200), np.linspace(0.1, 0.9, 199))}}
    fig = plots.training_curves(series, "epoch", smoothing=0.5, smoothed=("train (steps)",), log_loss=True)
    names = [t.name for t in fig.data]
    assert names.count("train (steps)") == 4 and names.count("val (epochs)") == 1   # raw + smoothed, twice
    assert fig.layout.xaxis.title.text == "epoch" and fig.layout.yaxis.type == "log"
    # 0.3 to 0.9 holds no power of ten: labelled at 0.3, 0.4, ... instead of not at all.
    shown = [text for value, text in zip(fig.layout.yaxis.tickvals, fig.layout.yaxis.ticktext) if 0.3 <= value <= 0.9]
    assert shown == ["0.3", "0.4", "0.5", "0.6", "0.7", "0.8", "0.9"]


def labels(ticks: dict) -> list[str]:
    """The labels a log axis shows, each checked to lie inside its range and none crowding the next;
    plotly's own powers of ten (dtick) as 10^-3."""
    low, high = ticks["range"]
    if "dtick" in ticks:
        powers = [e for e in range(math.ceil(low), math.floor(high) + 1) if e % ticks["dtick"] == 0]
        positions, texts = powers, [f"10^{e}" for e in powers]
    else:
        positions, texts = np.log10(ticks["tickvals"]), ticks["ticktext"]
    assert all(low <= p <= high for p in positions)
    assert min(np.diff(positions)) >= plots.MIN_TICK_GAP * (high - low)
    return texts


def test_log_ticks_step_1_2_5_where_those_fit():
    assert labels(plots.log_ticks([0.05, 2.3])) == ["0.05", "0.1", "0.2", "0.5", "1", "2"]
    assert labels(plots.log_ticks([2e-4, 3e-3])) == ["0.0002", "0.0005", "0.001", "0.002"]
    assert labels(plots.log_ticks([5e-5, 2e-4])) == ["5e-5", "1e-4", "2e-4"]      # one style on an axis


def test_log_ticks_at_powers_of_ten_over_decades():
    ticks = plots.log_ticks([1e-5, 3e-3, 1.0])
    assert labels(ticks) == ["10^-5", "10^-4", "10^-3", "10^-2", "10^-1", "10^0"]
    assert ticks["exponentformat"] == "power"                                # plotly's 10⁻⁵, as _log_axis
    assert labels(plots.log_ticks([1e-20, 1.0])) == [f"10^{e}" for e in range(-18, 1, 3)]   # 8 at most


def test_log_ticks_for_a_constant_series_pad_its_range_and_label_its_value():
    ticks = plots.log_ticks(np.full(400, 0.001))                             # a 1-epoch run's constant lr
    assert labels(ticks) == ["0.0005", "0.001", "0.002"]
    low, high = ticks["range"]
    assert math.isclose(low + high, 2 * -3) and high - low > 0.5             # centred on it, a factor 4 or so


def test_log_ticks_within_a_decade_step_evenly():
    assert labels(plots.log_ticks([0.0011, 0.0019])) == ["0.0012", "0.0014", "0.0016", "0.0018"]
    assert labels(plots.log_ticks([0.0021, 0.0045])) == ["0.0025", "0.003", "0.0035", "0.004", "0.0045"]
    assert labels(plots.log_ticks([0.0008, 0.0015])) == ["0.0008", "0.001", "0.0012", "0.0014"]  # no bare top


def test_log_ticks_leave_out_nan_and_values_a_log_axis_cannot_draw():
    assert labels(plots.log_ticks([np.nan, 0.001, np.inf, 0.0, -1.0, 0.002, np.nan])) == ["0.001", "0.0015", "0.002"]
    assert plots.log_ticks([np.nan, 0.0]) == {"dtick": 1, "exponentformat": "power"}   # nothing to draw


@pytest.mark.parametrize("seed", range(3))
def test_log_ticks_give_2_to_8_labels_inside_any_range(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        low = 10 ** rng.uniform(-8, 3)
        ticks = plots.log_ticks([low, low * 10 ** rng.uniform(0, rng.choice([0.05, 1, 4]))])
        shown = labels(ticks)
        assert 2 <= len(shown) <= plots.MAX_LOG_TICKS and len(set(shown)) == len(shown)


def test_line_chart_log_axis_takes_the_ticks_and_range():
    fig = plots.line_chart({"lr": (np.arange(1, 400), np.full(399, 0.001))}, "learning rate", log_y=True)
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis.ticktext) == ["0.0005", "0.001", "0.002"]
    assert list(fig.layout.yaxis.range) == plots.log_ticks([0.001])["range"]


def test_compare_overlays_train_and_val_and_draws_a_one_epoch_run():
    runs = {"long": {"train": (np.arange(1, 300), np.linspace(0.1, 0.9, 299)), "val": ([1, 2, 3], [0.5, 0.7, 0.8])},
            "short": {"train": ([1.0], [0.4]), "val": ([1.0], [0.45])}}
    fig = plots.compare_curves(runs, "acc", "epoch", smoothing=0.6)
    traces = {t.name: t for t in fig.data if t.showlegend is not False}
    assert set(traces) == {"long · train", "long · val", "short · train", "short · val"}
    assert "markers" in traces["short · val"].mode and "markers" in traces["short · train"].mode   # one point shows
    assert traces["long · train"].line.dash == "dash" and traces["long · val"].line.dash == "solid"
    assert traces["long · train"].line.color == traces["long · val"].line.color != traces["short · val"].line.color
    assert fig.layout.yaxis.title.text == "accuracy" and fig.layout.xaxis.title.text == "epoch"


# --- the pages -----------------------------------------------------------------------------------
def written_run(store, name: str, epochs: int, steps_per_epoch: int = 20, log_every: int = 5) -> str:
    """A finished run's folder as the trainer leaves it (config, status, metrics), written directly:
    the charts read only these files, and training would cost the test its time."""
    from conftest import tiny_digits
    from core.runs.streams import MetricsWriter
    run_id = store.create_run(tiny_digits(name=name, epochs=epochs))
    start = time.time() - 600
    writer = MetricsWriter(store.metrics_path(run_id))
    for step in range(log_every, epochs * steps_per_epoch + 1, log_every):
        epoch = (step - 1) // steps_per_epoch + 1
        writer.write({"time": start + step, "step": step, "epoch": epoch, "split": "train", "kind": "step",
                      "loss": 2.0 / step ** 0.5, "acc": 1 - 1 / step ** 0.5, "lr": 1e-3, "samples_per_s": 900.0 + step})
        if step % steps_per_epoch == 0:
            for split in ("train", "val"):
                writer.write({"time": start + step, "step": step, "epoch": epoch, "split": split, "kind": "epoch",
                              "loss": 1.5 / epoch, "acc": 1 - 0.5 / epoch})
    writer.close()
    store.write_status(run_id, {**store.read_status(run_id), "state": "completed", "epoch": epochs,
                                "step": epochs * steps_per_epoch, "total_steps": epochs * steps_per_epoch,
                                "steps_per_epoch": steps_per_epoch, "started_at": start, "ended_at": start + 300,
                                "best": {"metric": "val_acc", "value": 1 - 0.5 / epochs, "epoch": epochs}})
    return run_id


def chart(app, key: str) -> dict:
    """The figure of the chart with this key, its typed arrays (plotly's {dtype, bdata}) as lists."""
    [found] = [c for c in app.get("plotly_chart") if c.proto.id.endswith(key)]

    def decode(value):
        if isinstance(value, dict) and "bdata" in value:
            return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
        if isinstance(value, dict):
            return {k: decode(v) for k, v in value.items()}
        return [decode(v) for v in value] if isinstance(value, list) else value
    return decode(json.loads(found.proto.spec))


@pytest.fixture
def two_runs(tmp_path):
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    one_epoch = written_run(store, "one epoch", 1)
    three = written_run(store, "three epochs", 3)          # the newest: the chosen run
    return store, three, one_epoch


def test_train_page_chart_controls_apply_and_survive_a_page_switch(app, two_runs):
    store, run_id, _ = two_runs
    app.run().switch_page(page_path("train")).run()
    no_errors(app)
    spec = chart(app, f"curves_{run_id}")
    assert spec["layout"]["xaxis"]["title"]["text"] == "step"
    assert sum(t["name"] == "train (steps)" for t in spec["data"]) == 4      # smoothed by default: raw + smoothed

    app.radio(key="chart_x").set_value("epoch").run()
    app.slider(key="chart_smoothing").set_value(0.0).run()
    app.toggle(key="chart_log").set_value(True).run()
    no_errors(app)
    spec = chart(app, f"curves_{run_id}")
    assert spec["layout"]["xaxis"]["title"]["text"] == "epoch" and spec["layout"]["yaxis"]["type"] == "log"
    train = [t for t in spec["data"] if t["name"] == "train (steps)"]
    assert len(train) == 2 and max(train[0]["x"]) == pytest.approx(3.0)          # 60 steps = 3 epochs
    val = [t for t in spec["data"] if t["name"] == "val (epochs)"][0]
    assert val["x"] == pytest.approx([1.0, 2.0, 3.0])
    assert chart(app, f"lr_{run_id}")["layout"]["xaxis"]["title"]["text"] == "epoch"

    app.radio(key="chart_x").set_value("time").run()
    spec = chart(app, f"curves_{run_id}")
    assert spec["layout"]["xaxis"]["title"]["text"] == "wall time (s)"          # 60 s of metrics

    app.switch_page(page_path("runs")).run()      # a page without the controls clears their widget state
    app.switch_page(page_path("train")).run()
    no_errors(app)
    assert app.radio(key="chart_x").value == "time" and app.slider(key="chart_smoothing").value == 0.0
    assert app.toggle(key="chart_log").value is True


def test_compare_overlays_train_and_val_of_a_one_epoch_run(app, two_runs):
    store, three, one_epoch = two_runs
    app.run().switch_page(page_path("train")).run()
    app.session_state["compare_open"] = True          # the Compare expander unfolded
    app.run()
    assert sorted(app.multiselect(key="cmp_runs").value) == sorted([three, one_epoch])
    app.radio(key="cmp_x").set_value("epoch").run()
    no_errors(app)
    spec = chart(app, "cmp_chart")
    traces = {t["name"]: t for t in spec["data"] if t.get("showlegend") is not False}
    assert set(traces) == {"one epoch · train", "one epoch · val", "three epochs · train", "three epochs · val"}
    assert traces["one epoch · val"]["x"] == [1.0] and "markers" in traces["one epoch · val"]["mode"]
    assert traces["three epochs · train"]["x"] == pytest.approx([1.0, 2.0, 3.0])     # per epoch by default
    assert sum(t["name"] == "three epochs · train" for t in spec["data"]) == 1       # epoch means: not smoothed
    app.radio(key="cmp_train").set_value("step").run()
    spec = chart(app, "cmp_chart")
    steps = [t for t in spec["data"] if t["name"] == "three epochs · train"]
    assert len(steps) == 2 and len(steps[0]["x"]) == 12             # raw and smoothed, every 5th of 60 steps
    assert spec["layout"]["xaxis"]["title"]["text"] == "epoch"


def test_live_figures_are_rebuilt_only_when_the_run_has_new_lines_or_the_controls_change(tmp_path):
    import streamlit as st

    from core.runs.live import LiveMetrics
    from core.runs.store import RunStore
    from core.runs.streams import MetricsWriter
    from pages.common.curves import CURVES, RATES, ChartOptions, run_figures
    store = RunStore(tmp_path / "runs")
    run_id = written_run(store, "live", 2)
    live = LiveMetrics(store.metrics_path(run_id))
    live.refresh()
    options = ChartOptions()
    _, first = run_figures(run_id, live, options, CURVES)
    assert run_figures(run_id, live, options, CURVES)[1]["curves"] is first["curves"]     # nothing new: reused
    rates = run_figures(run_id, live, options, RATES)[1]
    assert set(rates) == {"lr", "speed"} and "curves" not in rates                         # each group its own

    writer = MetricsWriter(store.metrics_path(run_id))
    writer.write({"time": time.time(), "step": 45, "epoch": 3, "split": "train", "kind": "step", "loss": 0.1,
                  "acc": 0.97, "lr": 1e-3, "samples_per_s": 1000.0})
    writer.close()
    live.refresh()
    rebuilt = run_figures(run_id, live, options, CURVES)[1]["curves"]
    assert rebuilt is not first["curves"]
    assert max(max(trace.x) for trace in rebuilt.data if trace.name == "train (steps)") == 45   # the new point
    log = run_figures(run_id, live, ChartOptions(log_y=True), CURVES)[1]["curves"]
    assert log is not rebuilt and log.layout.yaxis.type == "log"
    st.session_state.clear()



def test_the_lr_chart_shows_a_fine_tuned_backbones_own_lr_once_it_trains(tmp_path):
    import streamlit as st

    from core.runs.live import LiveMetrics
    from core.runs.store import RunStore
    from core.runs.streams import MetricsWriter
    from pages.common.curves import RATES, ChartOptions, run_figures
    store = RunStore(tmp_path / "runs")
    run_id = written_run(store, "fine-tune", 1)
    live = LiveMetrics(store.metrics_path(run_id))
    live.refresh()
    assert [t.name for t in run_figures(run_id, live, ChartOptions(), RATES)[1]["lr"].data] == ["lr"]
    writer = MetricsWriter(store.metrics_path(run_id))
    for step in (30, 35):          # head-only epochs over: the backbone trains at a tenth of the lr
        writer.write({"time": time.time(), "step": step, "epoch": 2, "split": "train", "kind": "step",
                      "loss": 0.1, "acc": 0.97, "lr": 1e-3, "backbone_lr": 1e-4, "samples_per_s": 1000.0})
    writer.close()
    live.refresh()
    lr = run_figures(run_id, live, ChartOptions(), RATES)[1]["lr"]
    traces = {trace.name: trace for trace in lr.data}
    assert set(traces) == {"head lr", "backbone lr"}
    backbone = [(x, y) for x, y in zip(traces["backbone lr"].x, traces["backbone lr"].y) if y == y]
    assert backbone == [(30, 1e-4), (35, 1e-4)]                    # nothing drawn while it was frozen
    st.session_state.clear()
