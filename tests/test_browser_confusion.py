"""The confusion matrix clicked in headless Chromium: a click on a cell sets the cell pickers to it and
shows its samples, off and on the diagonal, and again after the pickers moved by keyboard."""
import re

import numpy as np
import pytest
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_page
from test_results import weak_digits


@pytest.fixture(scope="module")
def weak(server, train):
    """A barely trained run (~20% accuracy), evaluated: (report, arrays)."""
    from core.analysis.evaluate import evaluate_run
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    run_id = store.create_run(weak_digits(name="browser-confusion"))
    assert train(store, run_id) == "completed"
    return evaluate_run(store, run_id)


def click_cell(page, true: int, predicted: int, n: int):
    """A mouse click inside a cell, off its centre: plotly's drag layer (.nsewdrag) covers the plot area,
    row 0 at the top."""
    chart = page.locator(".st-key-ev_confusion .js-plotly-plot")     # the name docs/screenshots.py waits for
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + box["width"] * (predicted + 0.7) / n, box["y"] + box["height"] * (true + 0.3) / n)


def expect_cell(page, classes, arrays, true: int, predicted: int):
    from core.analysis.evaluate import cell_rows
    total = len(cell_rows(arrays, true, predicted))
    main = page.get_by_test_id("stMain")
    expect(page.get_by_text(f"{total:,} sample(s) of class {classes[true]} predicted as {classes[predicted]}, "
                            "most confident first")).to_be_visible()
    expect(main.get_by_role("combobox", name="True class")).to_have_value(classes[true])
    expect(main.get_by_role("combobox", name="Predicted as")).to_have_value(classes[predicted])
    if total:                                   # the cell's gallery comes first, before the mistakes'
        expect(page.get_by_text(re.compile(rf"^Showing {min(24, total)} of {total} \(")).first).to_be_visible()
        expect(page.get_by_test_id("stHtml").first.locator(".tb-tile")).to_have_count(min(24, total))


def test_a_click_on_a_cell_shows_its_samples(page, server, weak):
    from core.analysis.evaluate import most_confused_cell
    report, arrays = weak
    classes, matrix = report["classes"], np.array(report["confusion_matrix"])
    n = len(classes)
    worst = most_confused_cell(matrix)
    # The most mistakes but for the cell the page opens on: the click must move the pickers.
    mistakes = sorted(((t, p) for t in range(n) for p in range(n) if t != p and (t, p) != worst),
                      key=lambda cell: -matrix[cell])
    true, predicted = mistakes[0]
    assert matrix[true, predicted] > 1
    diagonal = next(k for k in range(n) if matrix[k, k] and k not in worst)
    open_page(page, server, "evaluate")
    expect(page.get_by_role("heading", name="Downloads")).to_be_visible(timeout=FIRST_RENDER_MS)
    expect_cell(page, classes, arrays, *worst)

    click_cell(page, true, predicted, n)
    expect_cell(page, classes, arrays, true, predicted)
    no_exception(page)
    page.screenshot(path=str(server["runs"].parent / "confusion-click.png"), full_page=True)

    # The pickers still work (keyboard); a click on the cell clicked last, after they moved, picks it again.
    main = page.get_by_test_id("stMain")
    main.get_by_role("combobox", name="True class").click()
    page.get_by_role("option", name=classes[diagonal], exact=True).click()
    expect_cell(page, classes, arrays, diagonal, predicted)
    click_cell(page, true, predicted, n)
    expect_cell(page, classes, arrays, true, predicted)

    click_cell(page, diagonal, diagonal, n)                 # the correct predictions of a class
    expect_cell(page, classes, arrays, diagonal, diagonal)
    no_exception(page)
