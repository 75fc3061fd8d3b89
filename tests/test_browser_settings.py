"""Settings files on the Train form, in a real headless Chromium: a YAML file loaded through "Load
settings from a file" fills the form; "Download settings" gives the form's settings back as YAML."""
import yaml
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_form, open_page

SETTLED_MS = 30_000


def test_load_a_settings_file_into_the_form_and_download_it_back(page, server, tmp_path):
    settings = tmp_path / "from-git.yaml"
    settings.write_text("# kept beside the code\nname: from git\nepochs: 7\nlr: 0.0123\noptimizer: sgd\n"
                        "image_size: 12\n")
    open_page(page, server, "train")
    open_form(page)
    page.get_by_role("button", name="Load settings from a file").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(settings))
    expect(page.get_by_text("Prefilled from the settings file from-git.yaml")).to_be_visible(timeout=SETTLED_MS)
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("7", timeout=SETTLED_MS)
    expect(page.get_by_label("Run name", exact=True)).to_have_value("from git")
    expect(page.get_by_label("Learning rate", exact=True)).to_have_value("0.0123")
    no_exception(page)

    page.get_by_label("Epochs", exact=True).fill("9")          # changed in the form, then saved
    page.get_by_role("button", name="Download settings").click()
    save = page.get_by_role("button", name="Save from-git.yaml")
    expect(save).to_be_visible(timeout=FIRST_RENDER_MS)
    with page.expect_download() as download:
        save.click()
    saved = yaml.safe_load(open(download.value.path()).read())
    assert (saved["name"], saved["epochs"], saved["lr"], saved["optimizer"], saved["image_size"]) == \
        ("from git", 9, 0.0123, "sgd", 12)
    assert saved["dataset"] == "digits" and saved["schema_version"] == 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    page.get_by_role("button", name="Load settings from a file").click()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(bad))
    expect(page.get_by_text("The settings file was not loaded")).to_be_visible(timeout=SETTLED_MS)
    expect(page.get_by_text("bad.yaml is not YAML or JSON")).to_be_visible()
    expect(page.get_by_label("Epochs", exact=True)).to_have_value("9")     # nothing changed
    no_exception(page)
