"""`streamlit run app.py` on a free local port, for the benchmarks and the screenshot script."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_served(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")
            time.sleep(0.02)


@contextlib.contextmanager
def running_app(runs: Path | str, script: Path | str = ROOT / "app.py"):
    """Yields the URL of a Streamlit server on `script` with TRAINBOARD_RUNS=runs, answering health
    checks; stops it and its training children (one process group) afterwards."""
    with running_app_process(runs, script) as (url, _):
        yield url


@contextlib.contextmanager
def running_app_process(runs: Path | str, script: Path | str = ROOT / "app.py"):
    """running_app, yielding (url, the server's Popen) for benchmarks that measure the server itself."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=dict(os.environ, TRAINBOARD_RUNS=str(runs)), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_served(url)
        yield url, server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
