"""The paths a person clicks, in a real headless Chromium (Debian's) against `streamlit run app.py`.

A missing /usr/bin/chromium fails these tests: `make test` installs it.
"""
import re
import subprocess
import sys

import pytest
from playwright.sync_api import expect

from conftest import ROOT

FIRST_RENDER_MS = 60_000
# expect() waits 5 s unless told: on one busy core a page rerun with its charts took 9 s (CI is such a
# machine at times). Waiting longer costs a passing test nothing.
expect.set_options(timeout=20_000)


def open_page(page, server, path: str):
    page.goto(f"{server['url']}/{path}")
    expect(page.get_by_test_id("stSidebarNav")).to_be_visible(timeout=FIRST_RENDER_MS)


def no_exception(page):
    assert page.locator('[data-testid="stException"]').count() == 0


def open_form(page):
    # The runs table (or its placeholder) renders after the form: once it shows, the page has settled.
    settled = page.get_by_text("No runs yet.").or_(page.get_by_test_id("stDataFrame"))
    expect(settled.first).to_be_visible(timeout=FIRST_RENDER_MS)
    form = page.get_by_test_id("stExpander").filter(has_text="New run").first
    if form.locator("details").first.get_attribute("open") is None:    # folded once runs exist
        form.locator("summary").first.click()     # once: a second click would fold it again
    epochs_box = page.get_by_label("Epochs", exact=True)
    expect(epochs_box).to_be_visible(timeout=FIRST_RENDER_MS)      # sixty widgets: slow on a busy machine
    return epochs_box


def launch(page, epochs: int, name: str):
    open_form(page).fill(str(epochs))
    page.get_by_label("Run name", exact=True).fill(name)
    page.get_by_role("button", name="Launch").click()
    expect(page.get_by_role("heading", name=re.compile(f"Run {name}"))).to_be_visible(timeout=FIRST_RENDER_MS)


def test_enter_in_the_run_name_never_launches(page, server):
    open_page(page, server, "train")
    open_form(page)
    runs_before = sorted(p.name for p in server["runs"].glob("2*")) if server["runs"].exists() else []
    name = page.get_by_label("Run name", exact=True)
    name.fill("pressed-enter")
    name.press("Enter")
    page.wait_for_timeout(3000)
    assert (sorted(p.name for p in server["runs"].glob("2*")) if server["runs"].exists() else []) == runs_before
    expect(page.get_by_role("heading", name=re.compile("Run pressed-enter"))).to_have_count(0)
    no_exception(page)


def test_launch_a_run_and_watch_it_finish(page, server):
    open_page(page, server, "train")
    launch(page, 2, "browser-two-epochs")
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text("completed", timeout=120_000)
    expect(progress).to_contain_text("100%")
    curves = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    expect(curves).to_be_visible()
    expect(curves).to_contain_text("val (epochs)")
    expect(curves).to_contain_text("accuracy")
    no_exception(page)
    page.screenshot(path=str(server["runs"].parent / "train.png"), full_page=True)


def test_stop_resume_and_a_second_tab(page, server, browser):
    open_page(page, server, "train")
    launch(page, 300, "browser-long")
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text("running", timeout=60_000)
    # A second browser tab sees the same live run (the truth is the run folder, not the session).
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    open_page(other, server, "train")
    expect(other.get_by_test_id("stProgress")).to_contain_text("running", timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    expect(progress).to_contain_text("stopped", timeout=60_000)
    expect(other.get_by_test_id("stProgress")).to_contain_text("stopped", timeout=60_000)
    step_at_stop = int(re.search(r"step (\d+)/", progress.inner_text()).group(1))
    page.get_by_role("button", name="Resume").click()
    expect(progress).to_contain_text("running", timeout=60_000)
    expect(other.get_by_test_id("stProgress")).to_contain_text("running", timeout=30_000)   # no reload
    page.wait_for_function(
        "n => { const m = document.querySelector('[data-testid=stProgress]').innerText.match(/step (\\d+)\\//);"
        " return m && Number(m[1]) > n; }", arg=step_at_stop, timeout=60_000)
    page.get_by_role("button", name="Stop").click()
    expect(progress).to_contain_text("stopped", timeout=60_000)
    no_exception(page)
    other.context.close()


def test_a_run_started_from_the_cli_appears_in_an_open_tab(page, server):
    open_page(page, server, "runs")
    before = len(list(server["runs"].glob("2*/config.json"))) if server["runs"].exists() else 0
    page.wait_for_timeout(3000)                # the page has drawn; nothing reloads it from here on
    cli = subprocess.run([sys.executable, "-m", "core", "train", "--runs", str(server["runs"]), "--epochs", "1",
                          "--name", "from-the-cli", "--set", "image_size=8"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    # The tab was not reloaded: the page's watcher saw the runs folder change (the picker counts runs).
    picker = page.get_by_test_id("stSidebar").get_by_role("combobox", name=f"Run ({before + 1})")
    expect(picker).to_be_visible(timeout=20_000)
    picker.click()
    expect(page.get_by_role("option", name=re.compile("from-the-cli"))).to_be_visible()
    page.keyboard.press("Escape")
    no_exception(page)


def test_a_link_opens_the_run_it_names_and_keeps_naming_it(page, server, finished, train):
    from conftest import tiny_digits
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    newest = store.create_run(tiny_digits(image_size=8, epochs=1, name="newer-than-the-link"))
    assert train(store, newest) == "completed"
    page.goto(f"{server['url']}/train?run={finished}")         # not the newest: the picker's default
    expect(page.get_by_role("heading", name=re.compile("Run browser-finished"))).to_be_visible(
        timeout=FIRST_RENDER_MS)
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Evaluate").click()
    page.wait_for_url(re.compile(rf"/evaluate\?.*run={finished}"), timeout=30_000)
    expect(page.get_by_text("best.pt of " + finished)).to_be_visible(timeout=FIRST_RENDER_MS)
    no_exception(page)


def test_datasets_page_shows_balance_and_samples(page, server):
    open_page(page, server, "datasets")
    chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    expect(chart).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(chart).to_contain_text("Class balance per split")
    expect(page.get_by_test_id("stImage").first).to_be_visible()
    assert page.locator('[data-testid="stImage"] img').count() >= 24 + 9   # one page of a class + the preview
    no_exception(page)
    page.screenshot(path=str(server["runs"].parent / "datasets.png"), full_page=True)


@pytest.fixture(scope="module")
def finished(server, train):
    """A finished run made straight in the server's run store (pages open it by its link)."""
    from conftest import tiny_digits
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    run_id = store.create_run(tiny_digits(image_size=16, epochs=3, batch_size=32, name="browser-finished"))
    assert train(store, run_id) == "completed"
    return run_id


def digit_png(path, index=0):
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    Image.fromarray((digits.images[index] * 255 / 16).astype(np.uint8)).resize((64, 64)).save(path)
    return str(digits.target[index])


def test_evaluate_page_shows_the_confusion_matrix(page, server, finished):
    open_page(page, server, f"evaluate?run={finished}")    # other tests made newer runs
    chart = page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot').first
    expect(chart).to_contain_text("Confusion matrix", timeout=FIRST_RENDER_MS)
    expect(page.get_by_text("best.pt of " + finished)).to_be_visible()
    expect(page.get_by_role("button", name="Download report (HTML)")).to_be_visible()
    no_exception(page)


def test_drop_an_image_on_predict(page, server, finished, tmp_path):
    open_page(page, server, f"predict?run={finished}")
    drop = page.get_by_test_id("stFileUploaderDropzoneInput")
    drop.wait_for(state="attached", timeout=FIRST_RENDER_MS)
    expected = digit_png(tmp_path / "zero.png")
    drop.set_input_files(str(tmp_path / "zero.png"))
    expect(page.get_by_text(re.compile(rf"Predicted {expected} \("))).to_be_visible(timeout=60_000)
    expect(page.get_by_text("as the model sees it")).to_be_visible()
    no_exception(page)
    # Grad-CAM beside the prediction: for the predicted class, then for a class picked
    page.get_by_text("Grad-CAM", exact=True).click()
    expect(page.get_by_text(re.compile(rf"where it looks for {expected} \(\d+%\), features\.7"))).to_be_visible(
        timeout=60_000)
    page.get_by_role("combobox", name="Explain").click()
    page.get_by_role("option", name="3", exact=True).click()
    expect(page.get_by_text(re.compile(r"where it looks for 3 \(\d+%\)"))).to_be_visible(timeout=60_000)
    page.get_by_role("combobox", name="From layer").click()
    page.get_by_role("option", name="features.4", exact=True).click()
    expect(page.get_by_text(re.compile(r"where it looks for 3 \(\d+%\), features\.4"))).to_be_visible(timeout=60_000)
    no_exception(page)
