"""Results that leave the browser: paged tiles ("24 of 139"), file names under tiles, the HTML report
(settings, dataset, model, curves, thumbnails; plotly.js once), the ONNX export's freshness, and
`eval --report`; the Evaluate page through AppTest, a click on its confusion matrix included."""
import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from conftest import no_errors, tiny_digits
from core.data.folders import proposed_config
from pages.common.site import page_path

THUMBNAIL = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def weak_digits(**overrides):
    """One epoch at a tiny lr on half the data as val: ~20% accuracy, so cells of 25+ samples exist."""
    return tiny_digits(epochs=1, lr=1e-4, val_fraction=0.5, **overrides)


@pytest.fixture
def weak_run(store, train):
    run_id = store.create_run(weak_digits(name="weak"))
    assert train(store, run_id) == "completed"
    return run_id


# --- paging and tiles -------------------------------------------------------------------------
def test_pages_say_how_many_of_how_many():
    from core.analysis.gallery import page_of
    items = np.arange(100, 239)                      # 139 items
    first = page_of(items, 1)
    assert first.items.tolist() == list(range(100, 124))
    assert first.summary() == "24 of 139 (1–24), page 1 of 6"
    last = page_of(items, 6)
    assert last.items.tolist() == list(range(220, 239))
    assert last.summary() == "19 of 139 (121–139), page 6 of 6"
    assert page_of(items, 99).number == 6 and page_of(items, 0).number == 1     # clamped
    assert np.concatenate([page_of(items, n).items for n in range(1, 7)]).tolist() == items.tolist()
    assert page_of([], 1).summary() == "0 of 0"


def test_thumbnails_keep_small_images_and_shrink_large_ones():
    from core.analysis.gallery import THUMBNAIL_MAX_SIDE, png_data_uri
    small = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_data_uri(small).split(",", 1)[1]))))
    assert np.array_equal(decoded, small)
    large = np.zeros((200, 100, 3), dtype=np.uint8)
    picture = Image.open(io.BytesIO(base64.b64decode(png_data_uri(large).split(",", 1)[1])))
    assert max(picture.size) == THUMBNAIL_MAX_SIDE and picture.size == (32, 64)


def test_tiles_escape_captions_and_name_files():
    from core.analysis.gallery import Tile, tiles_html
    page = tiles_html([Tile(np.zeros((4, 4), np.uint8), ("<b>cat</b> →\u00a0dog", "0.93"), "cat.png: true cat",
                            name="cat.png")])
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>" not in page
    assert '<span class="tb-name">cat.png</span>' in page and 'title="cat.png: true cat"' in page
    assert len(THUMBNAIL.findall(page)) == 1


# --- which predictions ------------------------------------------------------------------------
def arrays_of(probs, labels):
    probs = np.asarray(probs, np.float32)
    return {"probs": probs, "labels": np.asarray(labels), "index": np.arange(len(labels)) + 100}


def test_cells_and_mistakes_most_confident_first():
    from core.analysis.evaluate import cell_rows, misclassified_rows, most_confused_cell
    arrays = arrays_of([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.45, 0.55]], [0, 0, 0, 1, 1])
    assert cell_rows(arrays, 0, 1).tolist() == [2, 1]          # true 0 predicted 1: 0.8 before 0.6
    assert cell_rows(arrays, 1, 0).tolist() == [3]
    assert misclassified_rows(arrays).tolist() == [2, 3, 1]     # confidences 0.8, 0.7, 0.6
    assert most_confused_cell([[3, 2], [1, 4]]) == (0, 1)
    assert most_confused_cell([[3, 0], [0, 4]]) == (0, 0)       # no mistakes: the first cell


def test_tiles_show_file_names_of_a_folder_and_indices_of_digits(image_folder):
    from core.analysis.evaluate import prediction_tiles, sample_image, sample_name
    from core.data.datasets import decode_file, load_dataset
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=12, val_fraction=0.3)
    split = load_dataset(config).splits["val"]
    assert len(split.files) == len(split)
    for position in range(len(split)):
        name = sample_name(split, position, config.data_path)
        assert re.fullmatch(r"(dark|mid|light)/\d+\.png", name)
        # the name is the file of that very sample
        assert np.array_equal(decode_file(str(image_folder / name), 12, 3).transpose(1, 2, 0),
                              sample_image(split, position))
    arrays = {"probs": np.eye(3, dtype=np.float32)[[1, 0]], "labels": np.array([0, 1]), "index": np.array([2, 0])}
    named = prediction_tiles([0, 1], arrays, ["dark", "light", "mid"], split, names=True, root=config.data_path)
    assert [t.name for t in named] == [sample_name(split, 2, config.data_path), sample_name(split, 0, config.data_path)]
    assert named[0].lines == ("dark →\u00a0light", "1.00")
    assert prediction_tiles([0], arrays, ["dark", "light", "mid"], split)[0].name is None
    assert prediction_tiles([0], arrays, ["dark", "light", "mid"], split, with_true_class=False)[0].lines == ("1.00",)

    digits = load_dataset(tiny_digits()).splits["val"]
    assert digits.files is None and sample_name(digits, 17) == "#17"


# --- the report -------------------------------------------------------------------------------
def test_report_carries_settings_dataset_model_curves_and_mistakes(store, weak_run):
    import plotly.offline

    from core.analysis.evaluate import evaluate_run, misclassified_rows
    from core.analysis.report import REPORT_MISTAKES, evaluation_html
    text = evaluation_html(store, weak_run)
    report, arrays = evaluate_run(store, weak_run)
    config = store.read_config(weak_run)
    assert "<h2>Run settings</h2>" in text
    assert "<tr><td>Learning rate</td><td>lr</td><td>0.0001</td></tr>" in text
    assert f"<td>val_fraction</td><td>{config.val_fraction}</td>" in text
    assert "<th>dataset</th><td>digits</td>" in text and "<th>input shape</th><td>1 x 8 x 8</td>" in text
    assert "<th>model</th><td>simple-cnn (" in text and re.search(r"<th>parameters</th><td>[\d,]{5,}</td>", text)
    assert "train (steps)" in text and "val (epochs)" in text           # the training curves
    assert text.count(plotly.offline.get_plotlyjs()[:2000]) == 1        # plotly.js inlined once
    assert text.count("Plotly.newPlot(") == 5                           # curves, confusion, ROC, PR, reliability
    wrong = misclassified_rows(arrays)
    thumbnails = THUMBNAIL.findall(text)
    assert len(wrong) > REPORT_MISTAKES and len(thumbnails) == REPORT_MISTAKES
    assert f"The {REPORT_MISTAKES} most confident of {len(wrong):,} misclassified" in text
    first = Image.open(io.BytesIO(base64.b64decode(thumbnails[0])))
    assert first.size == (8, 8)                                          # native size
    classes, probs = report["classes"], arrays["probs"]
    top = wrong[0]
    assert f"<span>{classes[arrays['labels'][top]]} →\u00a0{classes[probs[top].argmax()]}</span>" \
           f"<span>{probs[top].max():.2f}</span>" in text
    # small: everything but plotly.js stays well under half a megabyte
    assert len(text.encode()) - len(plotly.offline.get_plotlyjs().encode()) < 400_000


def test_eval_writes_the_report_from_the_command_line(cli, store, trained, tmp_path):
    target = tmp_path / "out" / "report.html"
    result = cli("eval", trained, "--report", target, runs=store.root)
    assert result.returncode == 2 and "cannot write the HTML report" in result.stderr and not target.exists()
    target.parent.mkdir()
    result = cli("eval", trained, "--report", target, runs=store.root)
    assert result.returncode == 0, result.stderr
    assert f"HTML report: {target}" in result.stdout
    text = target.read_text()
    assert text.startswith("<!doctype html>") and trained in text and "<h2>Run settings</h2>" in text


def test_onnx_export_is_current_until_best_changes(store, trained):
    import os

    from core.runs.derived import export_files
    from core.serving.export import export_is_current, export_run, read_export_report
    assert not export_is_current(store, trained) and read_export_report(store, trained) is None
    export_run(store, trained)
    assert export_is_current(store, trained)
    assert read_export_report(store, trained)["parity_max_abs_diff"]["real"] < 1e-3
    best = store.checkpoint_path(trained, "best")
    later = export_files(store, trained).path("onnx").stat().st_mtime + 5
    os.utime(best, (later, later))
    assert not export_is_current(store, trained)


# --- the Evaluate page ------------------------------------------------------------------------
@pytest.fixture
def weak_app_run(tmp_path, train):
    from core.runs.store import RunStore
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run(weak_digits(name="weak"))
    assert train(store, run_id) == "completed"
    return store, run_id


def summaries(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith("Showing ")]


def test_evaluate_page_pages_through_a_cell_and_the_mistakes(app, weak_app_run):  # noqa: F811
    from core.analysis.evaluate import cell_rows, evaluate_run, misclassified_rows, most_confused_cell
    store, run_id = weak_app_run
    app.run().switch_page(page_path("evaluate")).run()
    no_errors(app)
    report, arrays = evaluate_run(store, run_id)
    true, predicted = most_confused_cell(report["confusion_matrix"])
    cell, wrong = len(cell_rows(arrays, true, predicted)), len(misclassified_rows(arrays))
    assert cell > 24 and wrong > 48
    cell_pages, wrong_pages = -(-cell // 24), -(-wrong // 48)
    assert summaries(app) == [f"Showing 24 of {cell} (1–24), page 1 of {cell_pages}",
                              f"Showing 48 of {wrong} (1–48), page 1 of {wrong_pages}"]
    cell_tiles, wrong_tiles = (len(THUMBNAIL.findall(h.value)) for h in app.html)
    assert (cell_tiles, wrong_tiles) == (24, 48)

    app.number_input(key=f"ev_cell_page_{run_id}_best_val_{true}_{predicted}").set_value(2).run()
    shown = min(24, cell - 24)
    assert summaries(app)[0] == f"Showing {shown} of {cell} (25–{24 + shown}), page 2 of {cell_pages}"
    assert len(THUMBNAIL.findall(app.html[0].value)) == shown
    app.number_input(key=f"ev_wrong_page_{run_id}_best_val").set_value(wrong_pages).run()
    rest = wrong - 48 * (wrong_pages - 1)
    assert summaries(app)[1] == f"Showing {rest} of {wrong} ({wrong - rest + 1}–{wrong}), page {wrong_pages} of " \
                                f"{wrong_pages}"

    assert '<span class="tb-name">' not in app.html[1].value
    app.toggle(key="ev_names").set_value(True).run()
    no_errors(app)
    names = re.findall(r'<span class="tb-name">([^<]+)</span>', app.html[1].value)
    last = misclassified_rows(arrays)[48 * (wrong_pages - 1):]
    assert names == [f"#{arrays['index'][row]}" for row in last]          # digits: the index in the split


def click_chart(app, key_prefix: str, point_index: int):
    """What the browser sends when a point of a plotly chart with on_select is clicked. AppTest has no
    plotly chart widget (it never sends one's state), so the selection joins the other widgets' states
    by hand, through AppTest's private run."""
    import json

    from streamlit.proto.WidgetStates_pb2 import WidgetState
    chart = next(c for c in app.get("plotly_chart") if (c.key or "").startswith(key_prefix))
    states = app._tree.get_widget_states()
    selection = {"points": [{"curve_number": 1, "point_number": point_index, "point_index": point_index}],
                 "point_indices": [point_index], "box": [], "lasso": []}
    states.widgets.append(WidgetState(id=chart.proto.id, string_value=json.dumps({"selection": selection})))
    return app._run(states)


def test_a_click_on_the_confusion_matrix_picks_its_cell(app, weak_app_run):  # noqa: F811
    from core.analysis.evaluate import cell_rows, evaluate_run, most_confused_cell
    store, run_id = weak_app_run
    app.run().switch_page(page_path("evaluate")).run()
    report, arrays = evaluate_run(store, run_id)
    n, matrix = len(report["classes"]), np.array(report["confusion_matrix"])
    worst = most_confused_cell(matrix)
    true, predicted = next((t, p) for t in range(n) for p in range(n) if t != p and matrix[t, p] and (t, p) != worst)
    pickers = (app.selectbox(key=f"ev_true_{run_id}_best_val"), app.selectbox(key=f"ev_pred_{run_id}_best_val"))
    assert tuple(p.value for p in pickers) == worst

    click_chart(app, f"ev_confusion_{run_id}_best_val_", true * n + predicted)
    no_errors(app)
    pickers = (app.selectbox(key=f"ev_true_{run_id}_best_val"), app.selectbox(key=f"ev_pred_{run_id}_best_val"))
    assert tuple(p.value for p in pickers) == (true, predicted)
    total = len(cell_rows(arrays, true, predicted))
    assert summaries(app)[0].startswith(f"Showing {min(24, total)} of {total} ")
    app.run()                         # the next rerun without the click keeps the cell
    assert app.selectbox(key=f"ev_pred_{run_id}_best_val").value == predicted

    click_chart(app, f"ev_confusion_{run_id}_best_val_", 2 * n + 2)      # the diagonal: class 2 right
    assert (app.selectbox(key=f"ev_true_{run_id}_best_val").value,
            app.selectbox(key=f"ev_pred_{run_id}_best_val").value) == (2, 2)
    no_errors(app)


def test_evaluate_page_offers_best_pt_and_exports_onnx_on_a_click(app, finished_run, tmp_path):  # noqa: F811
    app.run().switch_page(page_path("evaluate")).run()
    no_errors(app)
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Download report (HTML)" in labels and any(label.startswith("best.pt (") for label in labels)
    assert not any(label.startswith("model.onnx") for label in labels)
    app.button(key="ev_export").click().run()
    no_errors(app)
    assert (tmp_path / "runs" / finished_run / "model.onnx").exists()
    labels = [b.proto.label for b in app.get("download_button")]
    assert any(label.startswith("model.onnx (") for label in labels)
    assert any("checked against torch (max abs difference" in c.value for c in app.caption)


def test_a_failed_export_says_why_and_offers_nothing(app, finished_run, tmp_path, monkeypatch):  # noqa: F811
    import core.serving.export
    from core.serving.export import ExportError

    def disagree(*args, **kwargs):
        raise ExportError("ONNX and torch disagree: max abs difference 3.0e-01 > 0.0001")
    monkeypatch.setattr(core.serving.export, "export_run", disagree)
    app.run().switch_page(page_path("evaluate")).run()
    app.button(key="ev_export").click().run()
    no_errors(app)
    assert any("ONNX export failed, nothing to download: ONNX and torch disagree" in e.value for e in app.error)
    assert not any(b.proto.label.startswith("model.onnx") for b in app.get("download_button"))
    app.run()                                   # the reason stays until the next try
    assert any("ONNX export failed" in e.value for e in app.error)


def test_the_evaluate_tiles_show_grad_cam_when_asked(app, weak_app_run):  # noqa: F811
    """The toggle turns each tile into its sample with the heat map of the class it was predicted as."""
    import base64
    import io

    from PIL import Image
    app.run().switch_page(page_path("evaluate")).run()
    plain = THUMBNAIL.findall(app.html[0].value)
    app.toggle(key="ev_gradcam").set_value(True).run()
    no_errors(app)
    heated = THUMBNAIL.findall(app.html[0].value)
    assert len(heated) == len(plain) == 24
    assert heated != plain
    first = Image.open(io.BytesIO(base64.b64decode(re.search(r'src="data:image/png;base64,([^"]+)"',
                                                             app.html[0].value)[1])))
    assert first.mode == "RGB"          # a grayscale digit coloured by its heat map


def test_a_confusion_cells_sample_opens_its_feature_maps_on_the_model_page(app, weak_app_run):  # noqa: F811
    from core.analysis.evaluate import cell_rows, evaluate_run, most_confused_cell
    store, run_id = weak_app_run
    app.run().switch_page(page_path("evaluate")).run()
    report, arrays = evaluate_run(store, run_id)
    true, predicted = most_confused_cell(report["confusion_matrix"])
    first = int(arrays["index"][cell_rows(arrays, true, predicted)[0]])
    [button] = [b for b in app.button if b.label == "Its feature maps"]
    button.click().run()
    no_errors(app)
    [section] = [e for e in app.expander if e.label == "A layer's channels for one image"]
    [seen, grid] = [image.captions[0] for image in section.get("image")]
    assert seen.startswith(f"Sample {first} of val (class "), seen
    assert "strongest first" in grid and app.radio(key="m_src").value == "Checkpoint of the chosen run"
