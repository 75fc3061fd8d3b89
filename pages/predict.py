"""Predict: not built yet (issue 4). Says so plainly instead of pretending."""
import streamlit as st

from pages import shared

shared.ensure_app_navigation()

st.title("Predict")
st.info("This page arrives with the Evaluate and Predict work (issue 4). Until then: "
        "`python -m core show RUN_ID` prints a run's figures, and the Train page shows its curves.")
