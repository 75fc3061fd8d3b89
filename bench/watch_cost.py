"""What watching a run costs the run: a CLI training run's samples/s with 0, 1 and 2 headless Chromium
tabs following it on the Train page, the tabs opened and closed in alternating windows.

Baseline, measured in the same run: the windows with no tab open. Each window's figure is the median
of the run's own step rows (`samples_per_s` in metrics.jsonl) logged inside it, after a settling time
that leaves out the tab's first page load; a condition's figure is the median over its windows, and
its ratio the median over rounds of its window's rate against the same round's no-tab window (a
core's speed on a shared VM drifts from one minute to the next). Also printed: the CPU the Streamlit
server and the browser used in each condition, and on an idle page (the training process paused with
SIGSTOP, so its files stop changing; its heartbeat too, so the run soon shows as interrupted).
Targets (issue 8): >= 0.90 with one tab, >= 0.80 with two, an idle page close to nothing.

    .venv/bin/python bench/watch_cost.py [--dataset fashion-mnist] [--rounds 4] [--window 24]

Fashion-MNIST is used when Debian's dataset-fashion-mnist is installed (the issue's figures are on it);
otherwise digits at 28x28, whose 20-step epochs put validation into every window.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, ROOT, running_app_process  # noqa: E402
from core.runs.states import HEARTBEAT_STALE_S  # noqa: E402

FASHION_FOLDER = Path("/usr/share/datasets/fashion-mnist")   # Debian's dataset-fashion-mnist
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of these processes (those that ended meanwhile count as zero)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def train_rates(metrics: Path, start: float, end: float) -> list[float]:
    rates = []
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("split") == "train" and row.get("kind") == "step" and start <= row.get("time", 0) < end \
                and row.get("samples_per_s"):
            rates.append(row["samples_per_s"])
    return rates


def training_command(runs: Path, dataset: str) -> list[str]:
    command = [sys.executable, "-m", "core", "train", "--runs", str(runs), "--name", "watched",
               "--epochs", "500", "--dataset", dataset]
    if dataset == "fashion-mnist":
        command += ["--data", str(FASHION_FOLDER)]
    else:
        command += ["--set", "image_size=28"]
    return command


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashion-mnist" if FASHION_FOLDER.is_dir() else "digits")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--window", type=float, default=24.0, help="seconds per window")
    parser.add_argument("--settle", type=float, default=8.0, help="seconds left out after the tabs change")
    parser.add_argument("--trainer-env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment of the training process (to measure a lever such as OMP_WAIT_POLICY)")
    args = parser.parse_args()
    trainer_env = dict(os.environ, **dict(item.split("=", 1) for item in args.trainer_env))
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, running_app_process(Path(tmp) / "runs") as (url, server):
        runs = Path(tmp) / "runs"
        trainer = subprocess.Popen(training_command(runs, args.dataset), cwd=ROOT, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, env=trainer_env)
        while not list(runs.glob("*/metrics.jsonl")):
            if trainer.poll() is not None:
                sys.exit(f"the training run ended early (exit {trainer.returncode})")
            time.sleep(0.5)
        metrics = next(runs.glob("*/metrics.jsonl"))
        time.sleep(10)                                        # past the first epoch's warm-up
        results: dict[int, list[dict]] = {0: [], 1: [], 2: []}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ui_pids = lambda: descendants(os.getpid()) - {trainer.pid} - descendants(trainer.pid)  # noqa: E731
            server_pids = lambda: {server.pid} | descendants(server.pid)  # noqa: E731
            tabs: list = []

            def set_tabs(n: int) -> None:
                while len(tabs) > n:
                    tabs.pop().close()
                while len(tabs) < n:
                    context = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = context.new_page()
                    page.goto(f"{url}/train")
                    tabs.append(context)

            def window(n: int) -> dict:
                set_tabs(n)
                time.sleep(args.settle)
                server_cpu, ui_cpu = cpu_seconds(server_pids()), cpu_seconds(ui_pids() - server_pids())
                start = time.time()
                time.sleep(args.window - args.settle)
                end = time.time()
                rates = train_rates(metrics, start, end)
                return {"rate": statistics.median(rates) if rates else float("nan"),
                        "server": (cpu_seconds(server_pids()) - server_cpu) / (end - start),
                        "browser": (cpu_seconds(ui_pids() - server_pids()) - ui_cpu) / (end - start)}

            for r in range(args.rounds):
                order = [(0, 1, 2), (2, 0, 1), (1, 2, 0)][r % 3]
                for n in order:
                    results[n].append(window(n))
                    print(f"round {r + 1}, {n} tab(s): {results[n][-1]['rate']:,.0f} samples/s, server "
                          f"{results[n][-1]['server']:.2f} cores, browser {results[n][-1]['browser']:.2f} cores",
                          flush=True)
            # An idle page: the run's files not changing. With its process paused the heartbeat goes
            # stale too, so after HEARTBEAT_STALE_S the run shows as interrupted and the page reruns
            # once; what is measured is after that.
            set_tabs(1)
            time.sleep(args.settle)
            trainer.send_signal(signal.SIGSTOP)
            time.sleep(HEARTBEAT_STALE_S + 6)
            server_cpu, ui_cpu = cpu_seconds(server_pids()), cpu_seconds(ui_pids() - server_pids())
            time.sleep(20)
            idle = {"server": (cpu_seconds(server_pids()) - server_cpu) / 20,
                    "browser": (cpu_seconds(ui_pids() - server_pids()) - ui_cpu) / 20}
            trainer.send_signal(signal.SIGCONT)
            set_tabs(0)
            browser.close()
        trainer.send_signal(signal.SIGINT)
        try:
            trainer.wait(30)
        except subprocess.TimeoutExpired:
            trainer.kill()

    base = statistics.median(w["rate"] for w in results[0])
    ratios = {n: statistics.median(w["rate"] / unwatched["rate"] for w, unwatched in zip(windows, results[0]))
              for n, windows in results.items()}
    print(f"\n{args.dataset}, default settings{''.join(' ' + e for e in args.trainer_env)}; "
          f"{args.rounds} rounds of {args.window:.0f} s windows "
          f"({args.settle:.0f} s settling left out)")
    print("| tabs | samples/s | ratio: rounds' median (of the medians) | server (cores) | browser (cores) |")
    print("|---|---|---|---|---|")
    for n, windows in results.items():
        rate = statistics.median(w["rate"] for w in windows)
        print(f"| {n} | {rate:,.0f} | {ratios[n]:.3f} ({rate / base:.3f}) "
              f"| {statistics.median(w['server'] for w in windows):.3f} "
              f"| {statistics.median(w['browser'] for w in windows):.3f} |")
    print(f"| idle page (1 tab, run paused: its files unchanged) | – | – | {idle['server']:.3f} "
          f"| {idle['browser']:.3f} |")


if __name__ == "__main__":
    main()
