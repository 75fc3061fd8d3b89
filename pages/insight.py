"""Insight: what happens inside a run's layers, from its probes: gradient flow, weight and gradient
histograms over time, update-to-weight ratios and dead ReLU units, live while it trains."""
import numpy as np
import streamlit as st

from core.analysis import insight, plots
from core.runs.states import ACTIVE_STATES
from pages.common import shared

st.title("Insight")
store = shared.store()
run_id = shared.selected_run()
if run_id is None:
    st.info("No run chosen: train one on the Train page, then pick it in the sidebar.")
    st.stop()
st.subheader(f"Run {shared.run_label(run_id)}")
active = store.read_status(run_id)["state"] in ACTIVE_STATES


@st.fragment(run_every=2.0 if active else None)
def draw() -> None:
    probes = shared.live_probes(run_id)            # only the records new since the last refresh are read
    missing = insight.missing_probes(store, run_id, probes)
    if missing:
        st.info(missing)
    if not probes or not insight.layer_names(probes):
        return
    last = probes[-1]
    st.caption(f"{len(probes)} probes, the last at step {last['step']} (epoch {last['epoch']}). Probes are taken "
               "every `probe_interval` steps and at each epoch's last step.")
    names = insight.layer_names(probes)
    layers = last["layers"]
    st.plotly_chart(plots.gradient_flow(
        names, [(layers[n].get("grad") or {}).get("norm", np.nan) for n in names],
        [layers[n]["weight"]["norm"] for n in names]), key="ins_flow")
    ranked = insight.movers(probes)
    chosen = st.multiselect("Layers (those that move most first)", ranked, default=ranked[:3], key="ins_layers")
    if chosen:
        st.plotly_chart(plots.line_chart({n: insight.update_ratios(probes, n) for n in chosen},
                                         "Update-to-weight ratio (around 1e-3 is typical)", log_y=True),
                        key="ins_ratio")
    for name in chosen:
        cols = st.columns(2)
        for col, part in zip(cols, insight.PARTS):
            found = insight.histograms_over_time(probes, name, part)
            if found is None:
                col.caption(f"{name}: no {part} values to draw")
            else:
                col.plotly_chart(plots.histogram_heatmap(*found, f"{name} · {part}s over time"),
                                 key=f"ins_hist_{name}_{part}")
    dead = insight.activation_series(probes, "dead_frac")
    if dead:
        st.plotly_chart(plots.line_chart(dead, "Dead ReLU units (share of units silent for a whole batch)"),
                        key="ins_dead")
    else:
        st.caption("No ReLU activations recorded: the model has no ReLU modules.")


draw()
