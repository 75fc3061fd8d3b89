"""Compare, on the Train page: two or more runs' curves overlaid and the settings that differ."""
import pandas as pd
import streamlit as st

from core import plots
from core.states import UNREADABLE
from pages import shared


def compare_runs(store) -> None:
    runs = [s for s in shared.runs_in_view() if s.state != UNREADABLE]
    if len(runs) < 2:
        return
    labels = {s.run_id: s.label for s in runs}
    with st.expander("Compare runs"):
        # The newest runs the sidebar search matches, and those already chosen.
        chosen_before = [r for r in st.session_state.get("cmp_runs", []) if r in labels]
        ids = list(dict.fromkeys(chosen_before + list(labels)[:shared.PICKER_LIMIT]))
        chosen = st.multiselect("Runs", ids, default=ids[:2], format_func=labels.get, key="cmp_runs")
        if len(chosen) < 2:
            st.caption("Pick two or more runs.")
            return
        metric = st.radio("Metric", ("acc", "loss"), horizontal=True, key="cmp_metric")
        series = {}
        for run_id in chosen:
            rows = [r for r in store.read_metrics(run_id) if r.get("split") == "val"]
            series[shared.run_name(run_id)] = ([r["epoch"] for r in rows], [r[metric] for r in rows])
        st.plotly_chart(plots.line_chart(series, f"val {metric}", x_title="epoch"), key="cmp_chart")
        configs = {run_id: store.read_config(run_id).to_dict() for run_id in chosen}
        keys = [k for k in configs[chosen[0]] if len({repr(c[k]) for c in configs.values()}) > 1]
        if keys:
            st.dataframe(pd.DataFrame({run_id: [configs[run_id][k] for k in keys] for run_id in chosen}, index=keys)
                         .astype(str))
        else:
            st.caption("These runs have identical configs.")


