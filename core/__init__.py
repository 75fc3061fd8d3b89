"""Trainboard core engine: data, models, training, run store, jobs. Never imports streamlit."""
