"""Trainboard's engine, by concern: data, models, training, runs (the run store), jobs, analysis,
serving, and the command line (cli). Never imports streamlit."""
