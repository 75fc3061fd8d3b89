"""The Runs page in headless Chromium: a click on a row opens that run on the Train page."""
import re

import pytest
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_page
from test_charts import written_run


@pytest.fixture(scope="module")
def two_runs(server):
    from core.runs.annotations import annotate
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    older = written_run(store, "opened by a click", 2)
    newer = written_run(store, "the newest", 3)       # the sidebar's choice until the click
    annotate(store, older, tags=["clicked"], note="row two")
    return older, newer


def test_clicking_a_row_opens_the_run_on_the_train_page(page, server, two_runs):
    older, newer = two_runs
    open_page(page, server, "runs")
    grid = page.get_by_test_id("stDataFrame")
    expect(grid).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(page.get_by_text("2 of 2 runs")).to_be_visible()
    no_exception(page)
    page.screenshot(path=str(server["runs"].parent / "runs.png"), full_page=True)
    # Rows are drawn on a canvas, newest first: the second row is the older run. Click its name cell.
    box = grid.bounding_box()
    header, row = 35, 35
    opened = page.get_by_role("heading", name=re.compile("Run opened by a click"))
    # A second click on the same cell would unselect it: click again only when the first was not taken.
    for attempt in range(2):
        page.mouse.click(box["x"] + 100, box["y"] + header + row * 1.5)
        try:
            expect(page).to_have_url(re.compile(r"/train(\?|$)"), timeout=30_000)
            break
        except AssertionError:
            if attempt:
                raise
    expect(opened).to_be_visible(timeout=FIRST_RENDER_MS)
    assert re.search(r"/train(\?|$)", page.url), page.url
    expect(page.get_by_text(older, exact=True).first).to_be_visible()
    no_exception(page)
