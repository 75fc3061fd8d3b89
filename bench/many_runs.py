"""10,000 runs: what a page rerun costs the store, and how long the Runs page takes to open.

Creates N finished runs (config.json, status.json, a few metric lines each) in a temporary runs
folder, then measures, in the same run:
- the store work of a page rerun: the runs table and run picker (list_runs, summaries cached and
  only stat()ed while their files are unchanged) against the baseline of re-reading every run's
  config.json and status.json (what the store did before the cache);
- a live fragment tick on one run (status, config, new metric lines);
- opening the Runs page in headless Chromium (server warm), until its table and run count show.

    .venv/bin/python bench/many_runs.py [--runs 10000] [--repeats 5] [--no-browser]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, running_app  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.runs.files import atomic_write_bytes, atomic_write_json  # noqa: E402
from core.runs.store import RunStore  # noqa: E402


def make_runs(root: Path, count: int) -> list[str]:
    """Finished runs written as the trainer leaves them (no fsync: this is set-up, not measured)."""
    root.mkdir(parents=True, exist_ok=True)
    ids, now = [], time.time()
    for i in range(count):
        config = RunConfig(name=f"sweep trial {i}", lr=1e-3 * (1 + i % 7), epochs=10)
        run_id = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-sweep-trial-{i}-{i % 65536:04x}"
        folder = root / run_id
        (folder / "checkpoints").mkdir(parents=True)
        atomic_write_json(folder / "status.json", {
            "schema_version": 2, "state": "completed", "epoch": 10, "step": 200, "total_steps": 200,
            "created_at": now - count + i, "started_at": now - count + i, "ended_at": now - count + i + 30,
            "heartbeat": now - count + i + 30, "best": {"metric": "val_acc", "value": 0.9 + i % 10 / 100,
                                                        "epoch": 9}, "error": None, "pid": None}, fsync=False)
        atomic_write_bytes(folder / "config.json", config.to_json().encode(), fsync=False)
        lines = "".join(f'{{"step": {s}, "epoch": 1, "split": "train", "kind": "step", "loss": 1.0}}\n'
                        for s in range(20, 220, 20))
        (folder / "metrics.jsonl").write_text(lines)
        ids.append(run_id)
    return ids


def timed(function, repeats: int) -> float:
    """Median seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def store_work(root: Path, ids: list[str], repeats: int) -> None:
    store = RunStore(root)
    start = time.perf_counter()
    store.list_runs()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    RunStore(root).list_runs()            # a new process: the summaries the first one saved
    restarted = time.perf_counter() - start

    def reread_every_run():            # the baseline: no cache, every file read and parsed
        for run_id in store.run_ids():
            store.listing.read(run_id)

    def one_listing():                 # the journal, the directory listing, the cached summaries
        store.listing.forget_last()
        return store.list_runs()

    def train_page_rerun():            # run picker, runs table and compare: one listing, shared
        store.listing.forget_last()
        labels = {s.run_id: s.label for s in store.list_runs()}
        table = [(s.run_id, s.state, s.best_value) for s in store.list_runs()]
        compare = [s.run_id for s in store.list_runs() if s.state != "unreadable"]
        return labels, table, compare

    live_id = ids[len(ids) // 2]
    reader = store.metrics_reader(live_id)

    def live_tick():
        store.read_status(live_id)
        store.read_config(live_id)
        store.summary(live_id)
        reader.read_new()

    baseline = timed(reread_every_run, repeats)
    listing = timed(one_listing, repeats * 4)
    rerun = timed(train_page_rerun, repeats * 4)
    tick = timed(live_tick, repeats * 20)
    print(f"store work with {len(ids):,} runs (medians):")
    print(f"  baseline: re-read every run's config.json and status.json   {baseline * 1000:8.1f} ms")
    print(f"  one listing (change journal + folder listing + cache)       {listing * 1000:8.1f} ms   "
          f"ratio {baseline / listing:.0f}x")
    print(f"  a Train page rerun: run picker + runs table + compare       {rerun * 1000:8.1f} ms   "
          f"(target < 100 ms)")
    print(f"  live fragment tick on one run                               {tick * 1000:8.2f} ms")
    print(f"  first listing ever (every run read, then the summaries saved) {cold * 1000:6.1f} ms")
    print(f"  first listing of a restarted server (saved summaries checked) {restarted * 1000:6.1f} ms")


def runs_page(root: Path, count: int, repeats: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright
    with running_app(root) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        shown = f"{count:,} of {count:,} runs"

        def wait_for_runs_table(page) -> None:
            page.get_by_text(shown).wait_for(timeout=120_000)
            page.get_by_test_id("stDataFrame").wait_for(timeout=120_000)

        def open_in_new_tab() -> float:
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(f"{url}/runs")
            wait_for_runs_table(page)
            elapsed = time.perf_counter() - start
            page.close()
            return elapsed

        def switch_to_runs_page(page) -> float:
            page.goto(f"{url}/")
            page.get_by_text("Where to start").wait_for(timeout=120_000)
            start = time.perf_counter()
            page.get_by_test_id("stSidebarNavLink").filter(has_text="Runs").click()
            wait_for_runs_table(page)
            return time.perf_counter() - start

        first = open_in_new_tab()        # the server's first listing: from the summaries saved before
        tab = statistics.median(open_in_new_tab() for _ in range(repeats))
        page = browser.new_page()
        switch = statistics.median(switch_to_runs_page(page) for _ in range(repeats))
        browser.close()
    return {"switch": switch, "tab": tab, "first": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        start = time.perf_counter()
        ids = make_runs(root, args.runs)
        print(f"created {len(ids):,} finished runs in {time.perf_counter() - start:.1f} s")
        store_work(root, ids, args.repeats)
        if args.no_browser:
            return
        few = Path(folder) / "few"
        make_runs(few, 10)
        baseline = runs_page(few, 10, args.repeats)
        many = runs_page(root, args.runs, args.repeats)
    print(f"opening the Runs page in Chromium (medians of {args.repeats}; first: once, just after the server "
          "started, from the summaries saved before):")
    print(f"{'':<48}{'10 runs':>10}{f'{args.runs:,} runs':>14}{'ratio':>8}")
    for key, what in (("switch", "from another page (sidebar link); target < 1 s"),
                      ("tab", "in a new tab (loads the Streamlit client)"),
                      ("first", "in a new tab, first after the server starts")):
        print(f"  {what:<46}{baseline[key]:>9.2f}s{many[key]:>13.2f}s{many[key] / baseline[key]:>7.2f}x")


if __name__ == "__main__":
    main()
