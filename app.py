"""Trainboard: train, inspect and serve PyTorch image classifiers from the browser.

`streamlit run app.py` (what `make run` does) or any ASGI server (`uvicorn app:app`) serves this
st.App: the pages (the frame, pages/common/frame.py, navigates pages/), the job queue for the
server's whole life and GET /health (pages/common/server.py).
"""
from pathlib import Path

import streamlit as st

from pages.common import server

FRAME = Path(__file__).resolve().parent / "pages" / "common" / "frame.py"

app = st.App(FRAME, lifespan=server.lifespan, routes=server.ROUTES)
