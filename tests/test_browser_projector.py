"""The Projector page in headless Chromium: the map is made in the background, hovering a point shows
that point's own image, a click shows it large with its neighbours and Grad-CAM, a box selection
lists its samples, and the thumbnails' route refuses what it does not have."""
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_page


@pytest.fixture(scope="module")
def mapped(server, train):
    from conftest import tiny_digits
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    run_id = store.create_run(tiny_digits(image_size=16, epochs=2, batch_size=32, name="projected"))
    assert train(store, run_id) == "completed"
    return run_id


def hover_a_point(page):
    """Move over the map until plotly's hover label shows; returns (x, y, the label's row)."""
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    for i in range(4, 60):
        x, y = area["x"] + area["width"] * i / 60, area["y"] + area["height"] * (0.3 + 0.4 * (i % 5) / 5)
        page.mouse.move(x, y)
        label = page.locator(".hoverlayer .hovertext")
        if label.count():
            match = re.match(r"#(\d+):", label.first.text_content() or "")
            if match:
                return x, y, int(match[1])
    raise AssertionError("no point answered the hover")


def test_the_map_its_hover_thumbnails_a_click_and_a_box(page, server, mapped):
    open_page(page, server, f"projector?run={mapped}")
    expect(page.locator(".js-plotly-plot")).to_be_visible(timeout=FIRST_RENDER_MS)     # made by a child process
    expect(page.get_by_text(re.compile(r"\d+ samples of val, 512 features each"))).to_be_visible()
    x, y, row = hover_a_point(page)
    thumbnail = page.locator("img.tb-hover")
    expect(thumbnail).to_be_visible()
    assert thumbnail.get_attribute("data-row") == str(row)                    # the hovered point's own image
    page.wait_for_function("() => document.querySelector('img.tb-hover').naturalWidth === 96", timeout=30_000)

    page.mouse.click(x, y)
    expect(page.get_by_text(re.compile(rf"#{row}: true \d, predicted \d"))).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(page.get_by_text("Its 8 nearest neighbours in feature space")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Grad-CAM: where it looks for \d \(features\.7\)"))).to_be_visible()
    no_exception(page)

    page.locator(".modebar-btn[data-title='Box Select']").first.click()
    area = page.locator(".js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.move(area["x"] + 2, area["y"] + 2)
    page.mouse.down()
    page.mouse.move(area["x"] + area["width"] * 0.6, area["y"] + area["height"] - 2, steps=8)
    page.mouse.up()
    expect(page.get_by_text(re.compile(r"[\d,]+ selected, [\d,]+ of them predicted wrong"))).to_be_visible(
        timeout=FIRST_RENDER_MS)
    expect(page.locator(".tb-tile").first).to_be_visible()
    no_exception(page)


def test_a_clicked_samples_feature_maps_open_on_the_model_page(page, server, mapped):
    open_page(page, server, f"projector?run={mapped}")
    expect(page.locator(".js-plotly-plot")).to_be_visible(timeout=FIRST_RENDER_MS)
    x, y, row = hover_a_point(page)
    page.mouse.click(x, y)
    name = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(rf"#{row}: true")).first
    expect(name).to_be_visible(timeout=FIRST_RENDER_MS)
    position = re.match(r"#(\d+):", name.inner_text())[1]
    page.get_by_role("button", name="Its feature maps").click()
    expect(page.get_by_text(re.compile(rf"Sample {position} of val \(class \d\)"))).to_be_visible(
        timeout=FIRST_RENDER_MS)
    expect(page.get_by_text(re.compile("strongest first"))).to_be_visible()
    no_exception(page)


def test_the_thumbnail_route_refuses_what_the_maps_do_not_have(server, mapped):
    base = f"{server['url']}/api/thumbnail?run={mapped}&checkpoint=best&split=val"
    with urllib.request.urlopen(f"{base}&row=0", timeout=30) as response:      # the map exists (test above)
        assert response.headers["Content-Type"] == "image/png" and response.read(8) == b"\x89PNG\r\n\x1a\n"
    for bad in (f"{base}&row=999999", f"{base}&row=x", base.replace("split=val", "split=../x") + "&row=0",
                f"{server['url']}/api/thumbnail?run=../etc&checkpoint=best&split=val&row=0"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=30)
        assert refused.value.code == 404
