"""One live refresh of the Train page's chart fragment on a run with 100,000 metric lines.

The fragment reads only the lines appended since its last refresh (core.runs.live.LiveMetrics), then
draws downsampled curves (core.analysis.plots). Baseline, measured in the same run: re-reading the whole file
with pandas on every refresh, as a notebook would. Target: the fragment's own work under 50 ms.

    .venv/bin/python bench/live_refresh.py [--lines 100000] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from core.analysis import plots  # noqa: E402
from core.runs.live import LiveMetrics  # noqa: E402


def metric_line(step: int) -> str:
    row = {"time": 1.7e9 + step * 0.01, "step": step, "epoch": step // 1000 + 1, "split": "train", "kind": "step",
           "loss": 2.0 / (1 + step / 1000), "acc": 1 - 0.9 / (1 + step / 1000), "lr": 1e-3, "samples_per_s": 5000.0}
    return json.dumps(row, separators=(",", ":")) + "\n"


def val_line(epoch: int) -> str:
    return json.dumps({"time": 1.7e9, "step": epoch * 1000, "epoch": epoch, "split": "val", "kind": "epoch",
                       "loss": 1.0 / epoch, "acc": 1 - 0.5 / epoch}) + "\n"


def draw(live: LiveMetrics) -> None:
    """What the fragment draws on each refresh."""
    series = {m: {"train (steps)": live.series("train", "step", m), "val (epochs)": live.series("val", "epoch", m)}
              for m in ("loss", "acc")}
    plots.training_curves(series).to_plotly_json()
    plots.line_chart({"lr": live.series("train", "step", "lr")}, "learning rate", log_y=True).to_plotly_json()
    plots.line_chart({"samples/s": live.series("train", "step", "samples_per_s")}, "throughput").to_plotly_json()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "metrics.jsonl"
        with open(path, "w") as handle:
            for step in range(1, args.lines + 1):
                handle.write(metric_line(step))
                if step % 1000 == 0:
                    handle.write(val_line(step // 1000))
        live = LiveMetrics(path)
        start = time.perf_counter()
        live.refresh()
        first = time.perf_counter() - start
        step = args.lines
        incremental, baseline = [], []
        for _ in range(args.repeats):
            with open(path, "a") as handle:        # what a training run appends between two refreshes
                for _ in range(20):
                    step += 1
                    handle.write(metric_line(step))
            start = time.perf_counter()
            live.refresh()
            draw(live)
            incremental.append(time.perf_counter() - start)
            start = time.perf_counter()
            frame = pd.read_json(path, lines=True)
            frame[(frame["split"] == "train")][["step", "loss", "acc", "lr"]].to_numpy()
            baseline.append(time.perf_counter() - start)
        ours, theirs = statistics.median(incremental) * 1000, statistics.median(baseline) * 1000
        print(f"{live.lines:,} metric lines; first read of the whole file {first * 1000:.0f} ms (once per tab)")
        print(f"live refresh (read new lines + 3 downsampled figures): {ours:.1f} ms median of {args.repeats}")
        print(f"baseline (pandas re-reads the file, no figures):      {theirs:.1f} ms median of {args.repeats}")
        print(f"ratio baseline/live = {theirs / ours:.1f}x  (target: live under 50 ms)")


if __name__ == "__main__":
    main()
