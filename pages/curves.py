"""A run's training curves on the Train page: loss and accuracy, learning rate, throughput."""
import streamlit as st

from core import plots
from core.live import LiveMetrics


def draw_run_curves(run_id: str, live: LiveMetrics) -> None:
    series = {"loss": {}, "acc": {}}
    for metric in ("loss", "acc"):
        x, y = live.series("train", "step", metric)
        if len(x):
            series[metric]["train (steps)"] = (x, y)
        x, y = live.series("val", "epoch", metric)
        if len(x):
            series[metric]["val (epochs)"] = (x, y)
    st.plotly_chart(plots.training_curves(series), key=f"curves_{run_id}")
    cols = st.columns(2)
    cols[0].plotly_chart(plots.line_chart({"lr": live.series("train", "step", "lr")}, "learning rate",
                                          log_y=True), key=f"lr_{run_id}")
    cols[1].plotly_chart(plots.line_chart({"samples/s": live.series("train", "step", "samples_per_s")},
                                          "throughput"), key=f"speed_{run_id}")
