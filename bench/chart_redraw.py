"""What Plotly charts cost a watching browser: headless Chromium on bench/chart_redraw_app.py, the
Train page's three figures (2,000 points each) beside a progress bar in a fragment ticking every 2 s.

    .venv/bin/python bench/chart_redraw.py [--seconds 20]

Variants: none (the progress bar only, the baseline), outside (the figures drawn once, outside the
fragment), same (the same figures re-sent at every tick), three (new points every 5 s), same-plain
(same, without Streamlit's theme), table and table-html (a three-row runs table re-sent at every tick,
as st.dataframe and st.table). Printed: the browser's CPU (cores) over the window and its ratio to
the baseline's.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, running_app_process  # noqa: E402
from bench.watch_cost import cpu_seconds, descendants  # noqa: E402

APP = Path(__file__).resolve().parent / "chart_redraw_app.py"
VARIANTS = {"none": "progress bar only", "outside": "figures outside the fragment",
            "same": "same figures re-sent every 2 s", "three": "new points every 5 s",
            "same-plain": "same, theme=None", "table": "dataframe re-sent", "table-html": "st.table re-sent"}


def browser_cores(variant: str, seconds: float) -> float:
    from playwright.sync_api import sync_playwright
    os.environ["CHART_VARIANT"] = variant          # read by the Streamlit script
    with tempfile.TemporaryDirectory() as tmp, running_app_process(tmp, APP) as (url, server), \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url)
        time.sleep(6)                                   # past the first load
        pids = descendants(os.getpid()) - {server.pid} - descendants(server.pid)
        before = cpu_seconds(pids)
        time.sleep(seconds)
        used = (cpu_seconds(pids) - before) / seconds
        browser.close()
    return used


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    figures = {variant: browser_cores(variant, args.seconds) for variant in VARIANTS}
    print("| variant | browser (cores) | ratio to the progress bar only |")
    print("|---|---|---|")
    for variant, cores in figures.items():
        print(f"| {VARIANTS[variant]} | {cores:.3f} | {cores / max(figures['none'], 1e-6):.1f} |")


if __name__ == "__main__":
    main()
