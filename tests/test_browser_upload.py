"""Uploading your own images in a real headless Chromium: a zip made here (PNGs drawn with PIL) goes
through the Datasets page's uploader, becomes a listed dataset, and is picked as the folder."""
import zipfile

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_page

SETTLED_MS = 30_000       # expect() waits 5 s by default: too little on two busy cores


def colour_zip(path, per_class=5):
    """red/, green/, blue/ with small PNGs of that colour, and a note that is not an image."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for channel, name in enumerate(("red", "green", "blue")):
            for i in range(per_class):
                pixels = np.random.default_rng(i).integers(0, 60, (16, 16, 3), dtype=np.uint8)
                pixels[..., channel] = 200 + i
                target = path.parent / f"{name}{i}.png"
                Image.fromarray(pixels).save(target)
                archive.write(target, f"colours/{name}/{i}.png")
        archive.writestr("colours/red/notes.txt", "not a picture")
    return path


def pick(page, key: str, option: str):
    """Choose in a selectbox; a click that lands while the page reruns may close its list: open it again."""
    choice = page.get_by_role("option", name=option)
    for _ in range(5):
        page.locator(f".st-key-{key}").get_by_role("combobox").click()
        try:
            choice.wait_for(state="visible", timeout=5_000)
            break
        except Exception:
            page.keyboard.press("Escape")
    choice.click()


def test_a_zip_uploaded_in_the_browser_becomes_a_dataset_to_pick(page, server, tmp_path):
    from core.data.uploads import datasets_dir
    source = colour_zip(tmp_path / "colours.zip")
    open_page(page, server, "datasets")
    expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=FIRST_RENDER_MS)
    page.get_by_test_id("stExpander").filter(has_text="Add your own images").locator("summary").click()
    expect(page.get_by_text("MB each")).to_be_visible(timeout=SETTLED_MS)
    page.locator(".st-key-up_zip_name input").fill("my-colours")
    page.locator(".st-key-up_zip_0").get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(source))
    expect(page.locator(".st-key-up_zip_0").get_by_text("colours.zip")).to_be_visible(timeout=SETTLED_MS)
    page.get_by_role("button", name="Import").click()

    success = page.get_by_test_id("stAlert").filter(has_text="Imported 15 images into my-colours")
    expect(success).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(page.get_by_text("1 file not imported")).to_be_visible(timeout=SETTLED_MS)
    folder = datasets_dir(server["runs"]) / "my-colours"
    assert sorted(p.name for p in folder.iterdir()) == ["blue", "green", "red"]
    # picked above at once: the summary describes the new dataset
    expect(page.get_by_test_id("stMetric").filter(has_text="Classes")).to_contain_text("3", timeout=SETTLED_MS)
    no_exception(page)
    success.scroll_into_view_if_needed()     # the page scrolls inside Streamlit's own container
    page.screenshot(path=str(server["runs"].parent / "datasets-upload.png"))

    # back to digits, then the uploaded dataset picked from the list
    pick(page, "ds_name", "digits (built in, offline)")
    expect(page.get_by_test_id("stMetric").filter(has_text="Classes")).to_contain_text("10", timeout=SETTLED_MS)
    pick(page, "ds_name", "image folder (root/<class>/*.png)")
    pick(page, "ds_uploaded", "my-colours")
    expect(page.get_by_role("textbox", name="Folder", exact=True)).to_have_value(str(folder), timeout=SETTLED_MS)
    expect(page.get_by_test_id("stMetric").filter(has_text="Classes")).to_contain_text("3", timeout=SETTLED_MS)
    expect(page.get_by_test_id("stMetric").filter(has_text="Input shape")).to_contain_text("3 x 16 x 16",
                                                                                          timeout=SETTLED_MS)
    no_exception(page)

    page.get_by_role("tab", name="Images per class").click()
    expect(page.get_by_role("textbox", name="Class name")).to_be_visible(timeout=SETTLED_MS)
    page.screenshot(path=str(server["runs"].parent / "datasets-upload-class.png"))
    # straight to the Train page: the dataset picked here is the one there
    page.get_by_test_id("stSidebarNavLink").filter(has_text="Train").click()
    expect(page.get_by_role("textbox", name="Folder", exact=True)).to_have_value(str(folder), timeout=FIRST_RENDER_MS)
    no_exception(page)
