"""Time from starting the server (dependencies installed) to the first page a browser shows.

Measured for Trainboard's `streamlit run app.py` and, in the same run, for a one-line Streamlit
app as the baseline: the difference is what Trainboard itself costs at start-up.
"First page served": /_stcore/health answers. "First page shown": headless Chromium sees the page's
title rendered (the script has run once).

    .venv/bin/python bench/startup.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, running_app  # noqa: E402


def measure(script: Path, title: str, browser, runs: str) -> tuple[float, float]:
    start = time.perf_counter()
    with running_app(runs, script) as url:
        served = time.perf_counter() - start
        page = browser.new_page()
        page.goto(f"{url}/")
        page.get_by_role("heading", name=title).wait_for(timeout=60_000)
        shown = time.perf_counter() - start
        page.close()
    return served, shown


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        hello = Path(folder) / "hello.py"
        hello.write_text("import streamlit as st\nst.title('Hello')\n")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        results = {"baseline": [], "trainboard": []}
        for _ in range(args.repeats):
            results["baseline"].append(measure(hello, "Hello", browser, folder))
            results["trainboard"].append(measure(ROOT / "app.py", "Trainboard", browser, folder))
        browser.close()
    for name, values in results.items():
        served = statistics.median(v[0] for v in values)
        shown = statistics.median(v[1] for v in values)
        print(f"{name:<11} first page served {served:5.2f} s   first page shown {shown:5.2f} s "
              f"(median of {args.repeats})")
    base = statistics.median(v[1] for v in results["baseline"])
    ours = statistics.median(v[1] for v in results["trainboard"])
    print(f"ratio trainboard/baseline (shown) = {ours / base:.2f}x")


if __name__ == "__main__":
    main()
