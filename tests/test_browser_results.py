"""Results leaving the browser, clicked in headless Chromium: best.pt, model.onnx and the HTML report
downloaded from the Evaluate page and used (torch.load with weights_only, ONNX Runtime, the report
opened offline); a confusion cell paged; tile captions that wrap only between words."""
import re

import numpy as np
import pytest
import torch
from playwright.sync_api import expect

from test_browser import FIRST_RENDER_MS, no_exception, open_page
from test_results import weak_digits

# Each word of every caption line in one line box: a word broken across lines has rects on two rows.
BROKEN_WORDS_JS = """() => {
  const broken = [];
  for (const span of document.querySelectorAll('.tb-tile figcaption span')) {
    const text = span.firstChild;
    if (!text) continue;
    for (const match of text.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(text, match.index);
      range.setEnd(text, match.index + match[0].length);
      if (new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1) broken.push(match[0]);
    }
  }
  return broken;
}"""


@pytest.fixture(scope="module")
def weak(server, train):
    """A barely trained run (~20% accuracy): its most confused cell holds more than one page of samples."""
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    run_id = store.create_run(weak_digits(name="browser-weak"))
    assert train(store, run_id) == "completed"
    return store, run_id


def settled(page):
    expect(page.get_by_role("heading", name="Downloads")).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(page.get_by_text(re.compile(r"^Showing \d+ of")).first).to_be_visible(timeout=FIRST_RENDER_MS)


def test_a_confusion_cell_pages_through_all_its_samples(page, server, weak):
    from core.analysis.evaluate import cell_rows, evaluate_run, most_confused_cell
    store, run_id = weak
    report, arrays = evaluate_run(store, run_id)
    total = len(cell_rows(arrays, *most_confused_cell(report["confusion_matrix"])))
    pages = -(-total // 24)
    assert total > 24
    open_page(page, server, "evaluate")
    settled(page)
    first = page.get_by_text(f"Showing 24 of {total} (1–24), page 1 of {pages}")
    expect(first).to_be_visible()
    cell_tiles = page.get_by_test_id("stHtml").first.locator(".tb-tile")
    expect(cell_tiles).to_have_count(24)
    first_page_tips = cell_tiles.evaluate_all("tiles => tiles.map(t => t.title)")
    page.get_by_test_id("stNumberInput").first.get_by_test_id("stNumberInputStepUp").click()
    shown = min(24, total - 24)
    expect(page.get_by_text(f"Showing {shown} of {total} (25–{24 + shown}), page 2 of {pages}")).to_be_visible()
    expect(cell_tiles).to_have_count(shown)
    second_page_tips = cell_tiles.evaluate_all("tiles => tiles.map(t => t.title)")
    assert not set(first_page_tips) & set(second_page_tips)          # other samples, not the same ones again
    assert page.evaluate(BROKEN_WORDS_JS) == []

    page.get_by_text("File names under the tiles").click()
    names = page.get_by_test_id("stHtml").first.locator(".tb-name")
    expect(names).to_have_count(shown)
    assert all(re.fullmatch(r"#\d+", n) for n in names.all_inner_texts())     # digits: index in the split
    no_exception(page)
    page.screenshot(path=str(server["runs"].parent / "evaluate.png"), full_page=True)


def test_download_best_pt_onnx_and_the_report(page, server, weak, tmp_path):
    import onnxruntime as ort

    from core.data.datasets import load_dataset
    from core.runs.checkpoint import load_model
    store, run_id = weak
    open_page(page, server, "evaluate")
    settled(page)

    with page.expect_download() as download:
        page.get_by_role("button", name=re.compile(r"^best\.pt \(")).click()
    assert download.value.suggested_filename == f"{run_id}-best.pt"
    saved = tmp_path / "best.pt"
    download.value.save_as(saved)
    assert saved.read_bytes() == store.checkpoint_path(run_id, "best").read_bytes()
    checkpoint = torch.load(saved, weights_only=True)
    assert checkpoint["classes"] == [str(d) for d in range(10)] and checkpoint["model"]

    page.get_by_role("button", name="Export to ONNX").click()
    onnx_button = page.get_by_role("button", name=re.compile(r"^model\.onnx \("))
    expect(onnx_button).to_be_visible(timeout=120_000)
    with page.expect_download() as download:
        onnx_button.click()
    onnx = tmp_path / "model.onnx"
    download.value.save_as(onnx)
    model, loaded = load_model(saved)
    images = load_dataset(store.read_config(run_id)).splits["val"].images[:64].float() / 255
    inputs = ((images - torch.tensor(loaded["mean"]).view(1, -1, 1, 1))
              / torch.tensor(loaded["std"]).view(1, -1, 1, 1)).numpy()
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": inputs})[0]
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs)).numpy()
    assert logits.shape == (64, 10) and np.abs(logits - expected).max() < 1e-4

    with page.expect_download(timeout=120_000) as download:
        page.get_by_role("button", name="Download report (HTML)").click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    size = report.stat().st_size
    assert 4_000_000 < size < 5_500_000, size                # plotly.js (~4.8 MB) once, the rest small
    no_exception(page)

    offline = page.context.new_page()
    offline.route(re.compile(r"^https?://"), lambda route: route.abort())   # the file needs nothing online
    offline.goto(report.as_uri())
    expect(offline.locator(".js-plotly-plot")).to_have_count(5, timeout=30_000)
    expect(offline.locator(".tb-tile img")).to_have_count(48)
    assert offline.evaluate("[...document.images].every(i => i.complete && i.naturalWidth === 8)")
    assert offline.evaluate(BROKEN_WORDS_JS) == []
    offline.close()


def test_captions_wrap_between_words_never_inside_one(page):
    from core.analysis.gallery import Tile, tiles_html
    names = ["automobile", "airplane", "sneaker", "sandal", "ankle boot", "pullover", "T-shirt/top"]
    tiles = [Tile(np.zeros((8, 8), np.uint8), (f"{a} →\u00a0{b}", "0.93"))
             for a, b in zip(names, names[1:] + names[:1])]
    page.set_content(f"<div style='width:480px'>{tiles_html(tiles)}</div>")
    assert page.evaluate(BROKEN_WORDS_JS) == []
    heights = page.locator(".tb-tile figcaption span:first-child").evaluate_all(
        "spans => spans.map(s => s.getClientRects().length && s.getBoundingClientRect().height)")
    assert max(heights) > 1.5 * min(heights)                 # long captions did wrap, at spaces
    # The check catches a mid-word break: with break-all the same captions are cut inside words.
    page.add_style_tag(content=".tb-tile figcaption span{word-break:break-all !important}")
    assert page.evaluate(BROKEN_WORDS_JS)


def test_switching_runs_shows_the_new_runs_classes_in_the_cell_pickers(page, server, tmp_path, train):
    """The cell pickers are keyed by what is evaluated. With fixed keys, after a switch in the sidebar
    to a run with as many classes but other names, the picker kept the last run's choice and the
    browser its label (Fashion-MNIST's cell shown as digits' '9')."""
    from conftest import write_png
    from core.analysis.evaluate import evaluate_run, most_confused_cell
    from core.data.folders import proposed_config
    from core.runs.store import RunStore
    store = RunStore(server["runs"])
    runs = {}
    for name, classes in (("browser-shades", ("dark", "mid", "light")), ("browser-tones", ("low", "middle", "high"))):
        root = tmp_path / name
        for label, value in zip(classes, (10, 100, 200)):
            (root / label).mkdir(parents=True)
            for i in range(12):
                write_png(root / label / f"{i}.png", value + i % 5, size=(12, 12))
        runs[name] = store.create_run(proposed_config("image-folder", data_path=str(root), image_size=8,
                                                            model="mlp", epochs=1, batch_size=8, name=name))
        assert train(store, runs[name]) == "completed"
    report, _ = evaluate_run(store, runs["browser-tones"])
    true, predicted = (report["classes"][i] for i in most_confused_cell(report["confusion_matrix"]))
    open_page(page, server, f"evaluate?run={runs['browser-shades']}")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("combobox", name="True class")).to_be_visible(timeout=FIRST_RENDER_MS)
    main.get_by_role("combobox", name="True class").click()
    page.get_by_role("option", name="light").click()           # a choice of the first run's
    expect(page.get_by_text(re.compile(r"^\d+ sample\(s\) of class light predicted as"))).to_be_visible()
    page.get_by_test_id("stSidebar").get_by_role("combobox", name=re.compile(r"^Run \(")).click()
    page.get_by_role("option", name=re.compile("browser-tones")).click()
    expect(page.get_by_text(re.compile(rf"^\d+ sample\(s\) of class {true} predicted as {predicted},"))).to_be_visible()
    expect(main.get_by_role("combobox", name="True class")).to_have_value(true)
    expect(main.get_by_role("combobox", name="Predicted as")).to_have_value(predicted)
    no_exception(page)
