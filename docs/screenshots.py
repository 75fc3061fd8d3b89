"""Regenerate the README's screenshots: a demo run store, the app on a free port, one PNG per page.

    .venv/bin/python docs/screenshots.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from bench.app_server import CHROMIUM, CHROMIUM_ARGS, running_app  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.store import RunStore  # noqa: E402
from core.worker import run_training  # noqa: E402

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
    with running_app(runs) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1700})
        for name, wait in PAGES.items():
            page.goto(f"{url}/{name}")
            page.wait_for_timeout(wait * 1000)
            if name == "predict":
                page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(sample_files(runs.parent))
                page.wait_for_timeout(6000)
            page.screenshot(path=str(ROOT / "docs" / f"{name}.png"))
            print("wrote", ROOT / "docs" / f"{name}.png")
            if name == "train":            # the form, drawn from the settings' descriptions
                page.get_by_text("New run").first.click()
                page.get_by_text("More settings").first.click()
                page.wait_for_timeout(2000)
                page.locator('[data-testid="stExpander"]').first.screenshot(path=str(ROOT / "docs" / "train-form.png"))
                print("wrote", ROOT / "docs" / "train-form.png")
        browser.close()


if __name__ == "__main__":
    main()
