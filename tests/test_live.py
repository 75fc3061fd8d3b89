"""The live view's data path: incremental reads, resets after a resume, downsampled figures."""
import json

import numpy as np

from core.analysis import plots
from core.runs.live import LiveMetrics


def append(path, *rows):
    with open(path, "a") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def test_only_new_lines_are_read_and_series_grow(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, *({"step": s, "split": "train", "kind": "step", "loss": 1 / s, "time": s} for s in range(1, 11)))
    live = LiveMetrics(path)
    assert live.refresh() == 10
    assert live.refresh() == 0
    append(path, {"step": 11, "split": "train", "kind": "step", "loss": 0.05, "time": 11},
           {"step": 11, "epoch": 1, "split": "val", "kind": "epoch", "loss": 0.2, "acc": 0.9, "time": 11})
    assert live.refresh() == 2
    steps, losses = live.series("train", "step", "loss")
    assert steps.tolist() == list(range(1, 12)) and losses[-1] == 0.05
    assert live.last("val", "epoch", "acc") == 0.9
    assert live.steps_per_second() is None or live.steps_per_second() > 0


def test_last_is_none_for_a_field_the_line_lacks_but_a_nan_loss_is_kept(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, {"step": 5, "split": "train", "kind": "epoch", "loss": float("nan"), "acc": 0.5})
    live = LiveMetrics(path)
    live.refresh()
    assert live.last("train", "epoch", "samples_per_s") is None       # the page shows "–", not "nan"
    assert np.isnan(live.last("train", "epoch", "loss"))
    assert live.last("val", "epoch", "acc") is None


def test_a_rewritten_file_starts_the_series_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append(path, *({"step": s, "split": "train", "kind": "step", "loss": 1.0} for s in range(1, 21)))
    live = LiveMetrics(path)
    live.refresh()
    path.write_text(json.dumps({"step": 1, "split": "train", "kind": "step", "loss": 1.0}) + "\n")
    live.refresh()
    assert live.series("train", "step", "loss")[0].tolist() == [1]


def test_downsample_keeps_shape_and_last_point():
    x = np.arange(100_000)
    y = np.sin(x / 1000)
    dx, dy = plots.downsample(x, y, 1000)
    assert len(dx) == len(dy) == 1000
    assert dx[-1] == x[-1]
    assert np.allclose(dy, np.sin(dx / 1000), atol=0.01)
    assert plots.downsample(x[:10], y[:10])[0].tolist() == list(range(10))


def test_figures_carry_their_series():
    x = np.arange(5000)
    fig = plots.training_curves({"loss": {"train (steps)": (x, 1 / (x + 1))},
                                 "acc": {"val (epochs)": ([1, 2], [0.5, 0.9])}})
    names = [trace.name for trace in fig.data]
    assert names == ["train (steps)", "val (epochs)"]
    assert len(fig.data[0].x) == plots.MAX_POINTS
    assert fig.data[1].xaxis == "x2"
    balance = plots.class_balance(["a", "b"], {"train": [3, 4], "val": [1, 1]})
    assert [t.name for t in balance.data] == ["train", "val"] and list(balance.data[0].y) == [3, 4]


def test_rows_for_the_diagnosis_thin_a_long_series_but_keep_its_extremes(tmp_path):
    import math
    path = tmp_path / "metrics.jsonl"
    append(path, *({"step": s, "epoch": 1, "split": "train", "kind": "step",
                    "loss": math.nan if s == 5_003 else 1.0, "grad_norm": 50.0 if s == 777 else 1.0}
                   for s in range(1, 10_001)))
    live = LiveMetrics(path)
    live.refresh()
    rows = live.rows(max_per_series=100)
    assert len(rows) <= 103 and rows[0]["step"] == 1 and rows[-1]["step"] == 10_000
    assert any(r["step"] == 777 and r["grad_norm"] == 50.0 for r in rows)     # the spike survives
    assert all(set(r) >= {"split", "kind", "step", "epoch", "loss"} and "acc" not in r for r in rows)
    assert [r["step"] for r in rows if math.isnan(r["loss"])] == [5_003]      # and so does a NaN loss
