"""Shared fixtures: a fresh run store per test, small image data made on the spot, training, the app
through AppTest and in headless Chromium. The fixtures a test uses give it its markers (`browser`,
`page`, `trains`), so `make test-fast` can leave out the slow kinds without a list of tests."""
from __future__ import annotations

import csv
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# marker: the fixtures that give it (a fixture used through another counts: `page` uses `browser`)
MARKED_BY = {
    "browser": {"browser"},                     # headless Chromium against a real server
    "page": {"app"},                            # Streamlit's AppTest
    "trains": {"train", "job_manager"},         # a training run, in this process or a child
}


def pytest_collection_modifyitems(items):
    for item in items:
        for marker, fixtures in MARKED_BY.items():
            if fixtures & set(item.fixturenames):
                item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item, so a fixture can tell that its test failed."""
    outcome = yield
    setattr(item, f"report_{call.when}", outcome.get_result())


# --- runs -----------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    from core.runs.store import RunStore
    return RunStore(tmp_path / "runs")


@pytest.fixture(scope="session")
def train():
    """Train (or resume) a run in this process: run_training(store, run_id, callbacks=()) without
    signal handlers. Session-scoped (it holds nothing), so module fixtures that train can use it."""
    from core.training.worker import run_training
    return functools.partial(run_training, handle_signals=False)


@pytest.fixture
def trained(store, train):
    """The id of a finished two-epoch digits run in `store`."""
    run_id = store.create_run(tiny_digits(epochs=2))
    assert train(store, run_id) == "completed"
    return run_id


@pytest.fixture
def finished_run(tmp_path, train):
    """A finished digits run, named "finished", in the runs folder the `app` fixture serves."""
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run(tiny_digits(name="finished"))
    assert train(store, run_id) == "completed"
    return run_id


@pytest.fixture
def job_manager(store):
    """make(**options) -> a JobManager on `store` (its constructor recovers the runs folder); every one
    made is shut down after the test."""
    from core.jobs.manager import JobManager
    made = []

    def make(**options):
        made.append(JobManager(store, **options))
        return made[-1]
    yield make
    for manager in made:
        manager.shutdown()


def tiny_digits(**overrides):
    """A digits config that trains in about a second on 2 cores."""
    from core.config import RunConfig
    values = dict(image_size=8, epochs=2, batch_size=64, log_interval=5)
    values.update(overrides)
    return RunConfig.for_dataset("digits", **values)


# --- data -----------------------------------------------------------------------------------------
def write_png(path: Path, value: int, size=(12, 12), mode="RGB") -> None:
    from PIL import Image
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    noise = rng.integers(0, 40, shape, dtype=np.uint8)
    Image.fromarray((noise + value).astype(np.uint8), mode).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """root/<class>/*.png: three classes told apart by brightness, one image of a different size."""
    root = tmp_path / "images"
    for label, value in (("dark", 10), ("mid", 100), ("light", 200)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            write_png(root / label / f"{i}.png", value + i % 5, size=(12, 12) if i else (20, 16))
    return root


@pytest.fixture
def csv_folder(tmp_path) -> Path:
    root = tmp_path / "csvdata"
    (root / "img").mkdir(parents=True)
    rows = [("filename", "label")]
    for label, value in (("cat", 20), ("dog", 180)):
        for i in range(10):
            name = f"img/{label}{i}.png"
            write_png(root / name, value + i)
            rows.append((name, label))
    with open(root / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return root


# --- the command line -----------------------------------------------------------------------------
class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """`python -m core ARGS --runs RUNS`, run in this process through core.__main__.main."""
    from core.__main__ import main

    def run(*args, runs) -> CliResult:
        capsys.readouterr()
        code = main([*map(str, args), "--runs", str(runs)])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)
    return run


# --- the pages through AppTest --------------------------------------------------------------------
@pytest.fixture
def app(tmp_path, monkeypatch):
    """The app's frame in AppTest (app.py's st.App serves it), on a fresh runs folder (tmp_path/runs),
    its caches and job manager its own."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("TRAINBOARD_RUNS", str(tmp_path / "runs"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "pages" / "common" / "frame.py"), default_timeout=90)
    yield at
    from pages.common import shared
    shared.jobs().shutdown()
    st.cache_resource.clear()


def no_errors(at):
    assert not at.exception, [e.value for e in at.exception]


# --- the app in headless Chromium -----------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port and its own runs folder: {"url", "runs"}."""
    runs = tmp_path_factory.mktemp("browser") / "runs"
    port = free_port()
    env = dict(os.environ, TRAINBOARD_RUNS=str(runs))
    log = open(runs.parent / "streamlit.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                break
        except OSError:
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError((runs.parent / "streamlit.log").read_text())
            time.sleep(0.3)
    yield {"url": url, "runs": runs}
    # The server and its training children share a process group of their own: end them all.
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    log.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright (never a browser Playwright downloads)."""
    from playwright.sync_api import sync_playwright
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: apt-get install chromium (make test does)"
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, server, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print_what_the_page_showed(page, server)
    context.close()


def print_what_the_page_showed(page, server) -> None:
    """A failure on a machine we cannot watch (CI): what the page showed and what the server logged."""
    print(f"--- the page at {page.url}:")
    try:
        print(page.locator("[data-testid='stMain']").aria_snapshot(timeout=5_000)[:4000])
    except Exception as error:          # a page that is gone still gets its server log printed
        print(f"(no snapshot: {error})")
    log = (server["runs"].parent / "streamlit.log").read_text(errors="replace").splitlines()
    print("--- the end of the server's log:", *log[-40:], sep="\n")
