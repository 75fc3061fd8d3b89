"""The Streamlit script bench/chart_redraw.py opens: the Train page's three figures (2,000 points) and a
progress bar in a fragment ticking every 2 s, arranged as CHART_VARIANT says."""
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.analysis import plots  # noqa: E402

TABLE = pd.DataFrame({"run": [f"run-{i}" for i in range(3)], "state": ["running", "completed", "failed"],
                      "progress": [0.41, 1.0, 0.2], "best val acc": [0.9, 0.91, 0.5], "duration": [10.0, 200, 30]})
COLUMNS = {"progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent")}

V = os.environ.get("CHART_VARIANT", "none")
N = 2000


def three():
    t = int(time.time() // 5)
    x = np.arange(N + t % 1000)
    y = np.exp(-x / 500) + 0.05 * np.sin(x)
    return (plots.training_curves({"loss": {"train (steps)": (x, y), "val (epochs)": (x[::50], y[::50])},
                                   "acc": {"train (steps)": (x, 1 - y), "val (epochs)": (x[::50], 1 - y[::50])}},
                                  smoothing=0.6, smoothed=("train (steps)",)),
            plots.line_chart({"lr": (x, y)}, "learning rate", log_y=True),
            plots.line_chart({"samples/s": (x, 1000 * y)}, "throughput", smoothing=0.6))


def draw(figs, **kw):
    st.plotly_chart(figs[0], key="a", **kw)
    c = st.columns(2)
    c[0].plotly_chart(figs[1], key="b", **kw)
    c[1].plotly_chart(figs[2], key="c", **kw)


@st.fragment(run_every=2.0)
def ticker():
    st.progress(time.time() % 1, text=f"{time.time():.1f}")
    if V == "three":                       # new points every 5 s
        draw(three())
    elif V == "same":                      # the same figures re-sent at every tick
        if "fig" not in st.session_state:
            st.session_state.fig = three()
        draw(st.session_state.fig)
    elif V == "same-plain":                # the same, without Streamlit's theme
        if "fig" not in st.session_state:
            st.session_state.fig = three()
        draw(st.session_state.fig, theme=None)
    elif V == "table":                     # a runs table re-sent at every tick
        st.dataframe(TABLE, hide_index=True, column_config=COLUMNS, key="t")
    elif V == "table-html":
        st.table(TABLE)


if V == "outside":                         # static figures outside the ticking fragment
    draw(three())
ticker()
