"""Regenerate every screenshot the README shows: demo runs really trained on digits in a temporary
runs folder, the app on a free port, one small function per PNG.

    .venv/bin/python docs/screenshots.py                          # all of them (a few minutes on 2 cores)
    .venv/bin/python docs/screenshots.py --only compare,insight   # just these
"""
from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, running_app  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.runs.annotations import set_note, set_tags  # noqa: E402
from core.runs.store import RunStore  # noqa: E402
from core.training.worker import run_training  # noqa: E402

DOCS = ROOT / "docs"
FIRST_RENDER_MS = 90_000       # the first page of a fresh server imports torch; 2 busy cores are slow
expect.set_options(timeout=60_000)

# The demo runs, oldest first. Run ids are stamped to the second and the newest two are Compare's
# default choice: the baselines come last.
DEMO_RUNS = {
    "lr too high": dict(model="mlp", epochs=4, lr=0.3, log_interval=2),      # for the diagnosis
    "cnn-short": dict(model="simple-cnn", epochs=2, lr=5e-4, log_interval=5),   # mistakes enough to evaluate
    "cnn-baseline": dict(model="simple-cnn", epochs=8, log_interval=5),
    "mlp-baseline": dict(model="mlp", epochs=8, log_interval=5),
}


@dataclass
class Demo:
    url: str
    runs: Path
    ids: dict[str, str]       # run name -> run id

    def path(self, page: str, run: str = "cnn-baseline") -> str:
        return f"{self.url}/{page}?run={self.ids[run]}"


def make_demo_runs(runs: Path) -> dict[str, str]:
    """Train the demo runs (seconds each), evaluate one on test (the Runs page's test acc), tag them."""
    from core.analysis.evaluate import evaluate_run
    store = RunStore(runs)
    ids = {}
    for name, settings in DEMO_RUNS.items():
        ids[name] = store.create_run(RunConfig.for_dataset("digits", name=name, **settings))
        run_training(store, ids[name], handle_signals=False)
        time.sleep(1.0)         # the next run's id is a second later: the order above is the runs' order
    evaluate_run(store, ids["cnn-baseline"], "best", "test")
    set_tags(store, ids["cnn-baseline"], add=["baseline", "cnn"])
    set_tags(store, ids["mlp-baseline"], add=["baseline"])
    set_note(store, ids["lr too high"], "lr 0.3 on purpose")
    return ids


def digit_images(indices) -> list[tuple[str, bytes]]:
    """(file name, PNG bytes) of sklearn digits, enlarged as a person's files would be."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    digits = load_digits()
    files = []
    for i in indices:
        buffer = io.BytesIO()
        image = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8))
        image.resize((96, 96), Image.Resampling.NEAREST).save(buffer, format="PNG")
        files.append((f"digit-{digits.target[i]}-{i}.png", buffer.getvalue()))
    return files


# --- waiting and shooting ----------------------------------------------------------------------------
def open_page(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_test_id("stSidebarNav")).to_be_visible(timeout=FIRST_RENDER_MS)


def settle(page: Page) -> None:
    """Until the script run has ended and nothing is loading; an error box on the page fails the shot."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")
    expect(page.get_by_test_id("stSpinner")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    page.wait_for_timeout(1000)      # plotly and the tables' canvases draw after their elements mount


def wait_for(page: Page, *locators) -> None:
    for locator in locators:
        expect(locator).to_be_visible()
    settle(page)


def saved(name: str) -> str:
    print("wrote", DOCS / f"{name}.png", flush=True)
    return str(DOCS / f"{name}.png")


def whole_page(page: Page, name: str) -> None:
    """The page as tall as its content: Streamlit scrolls an inner pane, so a screenshot shows only
    the viewport."""
    box = page.get_by_test_id("stMainBlockContainer").bounding_box()
    page.set_viewport_size({"width": page.viewport_size["width"], "height": int(box["y"] + box["height"])})
    settle(page)
    page.screenshot(path=saved(name))


def region(page: Page, name: str, top, bottom, pad: int = 16) -> None:
    """From `top`'s upper edge to `bottom`'s lower edge, as wide as the wider of the two."""
    upper, lower = top.bounding_box(), bottom.bounding_box()
    x, y = min(upper["x"], lower["x"]) - pad, upper["y"] - pad
    right = max(upper["x"] + upper["width"], lower["x"] + lower["width"]) + pad
    page.screenshot(path=saved(name), clip={"x": x, "y": y, "width": right - x,
                                            "height": lower["y"] + lower["height"] + pad - y})


def alert(page: Page, text: str):
    return page.get_by_test_id("stAlert").filter(has_text=text).first


def expander(page: Page, title: str):
    """The expander titled `title`: the last one holding such a title, as an outer one holds its inner ones'."""
    return page.get_by_test_id("stExpander").filter(has=page.locator("summary", has_text=title)).last


def unfold(page: Page, title: str) -> None:
    box = expander(page, title)
    expect(box).to_be_visible()
    if box.locator("details").first.get_attribute("open") is None:
        box.locator("summary").first.click()


def chart(page: Page, key: str):
    return page.locator(f".st-key-{key} .js-plotly-plot")


# --- one function per screenshot ---------------------------------------------------------------------
def train(page: Page, demo: Demo) -> None:
    open_page(page, demo.path("train"))
    run = demo.ids["cnn-baseline"]
    wait_for(page, chart(page, f"curves_{run}"), chart(page, f"speed_{run}"), page.get_by_test_id("stDataFrame"))
    whole_page(page, "train")


def train_form(page: Page, demo: Demo) -> None:
    """The form drawn from the settings' descriptions, "More settings" unfolded."""
    open_page(page, demo.path("train"))
    unfold(page, "New run")
    unfold(page, "More settings")
    wait_for(page, page.get_by_label("Epochs", exact=True), page.get_by_role("button", name="Launch"))
    expander(page, "New run").screenshot(path=saved("train-form"))


def train_lr_finder(page: Page, demo: Demo) -> None:
    """A range test on the form's defaults (simple-cnn on digits): its suggestion and curve."""
    open_page(page, demo.path("train"))
    unfold(page, "New run")
    page.get_by_role("button", name="Find a learning rate").click()
    suggestion = alert(page, "Suggested learning rate")
    expect(suggestion).to_be_visible(timeout=180_000)
    wait_for(page, chart(page, "lr_find_curve"))
    region(page, "train-lr-finder", suggestion, chart(page, "lr_find_curve"))


def train_diagnosis(page: Page, demo: Demo) -> None:
    """The diagnosis of the run trained at lr 0.3: what its curves say, in words."""
    open_page(page, demo.path("train", run="lr too high"))
    heading = page.get_by_text("Diagnosis", exact=True)
    findings = page.get_by_test_id("stAlert").filter(has_text="What to try")
    wait_for(page, heading, findings.first)
    region(page, "train-diagnosis", heading, findings.last)


def train_charts(page: Page, demo: Demo) -> None:
    """The chart controls (epochs on the x axis, a log loss axis), the curves, the lr and throughput."""
    open_page(page, demo.path("train"))
    run = demo.ids["cnn-baseline"]
    wait_for(page, chart(page, f"speed_{run}"))
    page.get_by_test_id("stRadio").filter(has_text="x axis").get_by_text("epoch", exact=True).click()
    settle(page)
    page.get_by_text("Log loss axis").click()
    wait_for(page, chart(page, f"lr_{run}"), chart(page, f"speed_{run}"))
    region(page, "train-charts", page.get_by_test_id("stRadio").filter(has_text="x axis"),
           chart(page, f"speed_{run}"))


def compare(page: Page, demo: Demo) -> None:
    """Compare of the two newest runs: cnn-baseline and mlp-baseline."""
    open_page(page, demo.path("train"))
    unfold(page, "Compare runs")
    box = expander(page, "Compare runs")
    wait_for(page, chart(page, "cmp_chart"), box.get_by_test_id("stDataFrame"))
    box.screenshot(path=saved("compare"))


def insight(page: Page, demo: Demo) -> None:
    open_page(page, demo.path("insight"))
    wait_for(page, chart(page, "ins_flow"), chart(page, "ins_ratio"), chart(page, "ins_dead"))
    whole_page(page, "insight")


def datasets(page: Page, demo: Demo) -> None:
    open_page(page, f"{demo.url}/datasets")
    wait_for(page, chart(page, "class_balance"), page.get_by_text("augmented 8"))
    whole_page(page, "datasets")


def datasets_upload(page: Page, demo: Demo) -> None:
    """A zip of three class folders (and one file that is no image) imported in "Add your own images"."""
    archive = demo.runs.parent / "my-digits.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for label, indices in (("zero", range(0, 300, 10)), ("one", range(1, 300, 10)), ("two", range(2, 300, 10))):
            for file_name, data in digit_images(indices):
                zipped.writestr(f"{label}/{file_name}", data)
        zipped.writestr("two/notes.txt", "not a picture")
    open_page(page, f"{demo.url}/datasets")
    wait_for(page, chart(page, "class_balance"))
    unfold(page, "Add your own images")
    box = expander(page, "Add your own images")
    box.get_by_role("textbox", name="Dataset name").first.fill("my-digits")
    box.get_by_test_id("stFileUploaderDropzoneInput").first.set_input_files(str(archive))
    expect(box.get_by_text("my-digits.zip")).to_be_visible()
    box.get_by_role("button", name="Import").click()
    wait_for(page, alert(page, "Imported"), box.get_by_text("Your datasets"), chart(page, "class_balance"))
    unfold(page, "1 file not imported")           # the refused file, with its reason
    wait_for(page, expander(page, "1 file not imported").get_by_test_id("stDataFrame"))
    region(page, "datasets-upload", page.get_by_role("heading", name="Datasets"), box)   # the picker shows it picked


def model(page: Page, demo: Demo) -> None:
    open_page(page, f"{demo.url}/model")
    wait_for(page, page.get_by_text("Histograms of"), page.locator(".js-plotly-plot").first)
    page.set_viewport_size({"width": 1400, "height": 1700})      # the top of a long page
    settle(page)
    page.screenshot(path=saved("model"))


def runs(page: Page, demo: Demo) -> None:
    page.set_viewport_size({"width": 1600, "height": 1000})      # room for the table's columns
    open_page(page, demo.path("runs"))
    wait_for(page, page.get_by_test_id("stDataFrame").first, page.get_by_text("Download metrics"))
    whole_page(page, "runs")


def evaluate(page: Page, demo: Demo) -> None:
    open_page(page, demo.path("evaluate", run="cnn-short"))
    wait_for(page, chart(page, "ev_confusion"), chart(page, "ev_reliability"), page.get_by_text("Downloads"))
    whole_page(page, "evaluate")


def predict(page: Page, demo: Demo) -> None:
    """Three digits as a person would drop them, and one file that is no image."""
    folder = demo.runs.parent / "predict"
    folder.mkdir(exist_ok=True)
    paths = []
    for file_name, data in digit_images((0, 13, 27)):
        paths.append(folder / file_name)
        paths[-1].write_bytes(data)
    paths.append(folder / "notes.txt")
    paths[-1].write_text("not a picture")
    open_page(page, demo.path("predict"))
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files([str(p) for p in paths])
    wait_for(page, page.get_by_test_id("stDataFrame"), page.get_by_role("button", name="Results as CSV"))
    whole_page(page, "predict")


def projector(page: Page, demo: Demo) -> None:
    """The t-SNE map of the baseline's test split (made in the page's background job), a point clicked:
    its neighbours and Grad-CAM."""
    open_page(page, demo.path("projector"))
    page.get_by_text("test", exact=True).click()
    page.get_by_text("t-SNE", exact=True).click()
    expect(page.get_by_text("samples of test")).to_be_visible(timeout=FIRST_RENDER_MS)
    settle(page)
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 0.45, area["y"] + area["height"] * 0.45)
    wait_for(page, page.get_by_text("nearest neighbours in feature space"),
             page.get_by_text("Grad-CAM: where it looks"))
    whole_page(page, "projector")


def train_recipe(page: Page, demo: Demo) -> None:
    """The form as "Recipe: Fast Fashion-MNIST" fills it (without a GPU, with its warning)."""
    open_page(page, demo.path("train"))
    unfold(page, "New run")
    page.get_by_role("button", name="Recipe: Fast Fashion-MNIST").click()
    wait_for(page, alert(page, "Prefilled from the Fast Fashion-MNIST recipe"), page.get_by_label("Epochs", exact=True))
    expander(page, "New run").screenshot(path=saved("train-recipe"))


SHOTS = {"train": train, "train-form": train_form, "train-lr-finder": train_lr_finder,
         "train-diagnosis": train_diagnosis, "train-charts": train_charts, "compare": compare,
         "insight": insight, "datasets": datasets, "datasets-upload": datasets_upload, "model": model,
         "runs": runs, "evaluate": evaluate, "projector": projector, "predict": predict,
         "train-recipe": train_recipe}


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the screenshots in docs/ that the README shows.")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="remake only these: " + ", ".join(SHOTS))
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(SHOTS)
    unknown = [name for name in names if name not in SHOTS]
    if unknown:
        parser.error(f"no screenshot named {', '.join(unknown)}; there are {', '.join(SHOTS)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder) / "runs"
        demo_ids = make_demo_runs(runs)
        print(f"demo runs trained in {time.monotonic() - started:.0f} s", flush=True)
        with running_app(runs) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            demo = Demo(url, runs, demo_ids)
            for name in names:      # a fresh tab each: one screenshot's clicks never leak into the next
                page = browser.new_page(viewport={"width": 1400, "height": 2400})  # element shots need all in view
                SHOTS[name](page, demo)
                page.close()
            browser.close()
    print(f"{len(names)} screenshot(s) in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
