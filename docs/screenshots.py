"""Regenerate the README's screenshots: a demo run store, the app on a free port, one PNG per page.

    .venv/bin/python docs/screenshots.py
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.store import RunStore  # noqa: E402
from core.worker import run_training  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
PAGES = {"train": 14, "datasets": 8, "model": 8, "runs": 5, "evaluate": 12, "predict": 6}


def sample_files(folder: Path) -> list[str]:
    """Three digits as a person would drop them (larger PNGs), and one file that is no image."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    paths = []
    for i in (0, 13, 27):
        path = folder / f"digit-{digits.target[i]}.png"
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((96, 96), Image.Resampling.NEAREST).save(path)
        paths.append(str(path))
    notes = folder / "notes.txt"
    notes.write_text("not a picture")
    return paths + [str(notes)]


def main() -> None:
    runs = Path(tempfile.mkdtemp()) / "runs"
    store = RunStore(runs)
    for name, model in (("cnn-baseline", "simple-cnn"), ("mlp-baseline", "mlp")):
        run_training(store, store.create_run(RunConfig.for_dataset("digits", model=model, epochs=8, name=name,
                                                                    log_interval=5)), handle_signals=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                              cwd=ROOT, env=dict(os.environ, TRAINBOARD_RUNS=str(runs)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            for name, wait in PAGES.items():
                page.goto(f"http://127.0.0.1:{port}/{name}")
                page.wait_for_timeout(wait * 1000)
                if name == "predict":
                    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(sample_files(runs.parent))
                    page.wait_for_timeout(6000)
                page.screenshot(path=str(ROOT / "docs" / f"{name}.png"))
                print("wrote", ROOT / "docs" / f"{name}.png")
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
