"""Evaluate: a checkpoint on a split; confusion matrix whose cells show their samples (clicked or
picked), per-class report, ROC/PR, calibration, the misclassified samples (paged tiles), and the
downloads: the HTML report, best.pt and its ONNX export."""
import functools

import pandas as pd
import streamlit as st

from core.analysis import plots
from core.analysis.evaluate import cell_rows, misclassified_rows, most_confused_cell, prediction_tiles
from core.analysis.report import REPORT_MISTAKES
from core.runs.derived import EVAL_SPLITS, export_files
from core.runs.layout import CHECKPOINTS
from core.serving.export import export_is_current, read_export_report
from pages.common import feature_view, gallery, gradcam, shared

st.title("Evaluate")
run_id = shared.run_with_best_checkpoint()
store = shared.store()

cols = st.columns([1, 1, 2, 2])
checkpoint = cols[0].radio("Checkpoint", CHECKPOINTS, horizontal=True, key="ev_ckpt")
split = cols[1].radio("Split", EVAL_SPLITS, horizontal=True, key="ev_split")
show_names = cols[2].toggle("File names under the tiles", key="ev_names",
                            help="Folder datasets show each sample's file; digits and the standard sets have no "
                                 "files, so the sample's index in the split (#17) is shown.")
show_gradcam = cols[3].toggle("Grad-CAM on the tiles", key="ev_gradcam",
                              help="each tile shows where the model looks for the class it predicted (a heat map "
                                   "over the sample)")


@st.cache_data(show_spinner="Evaluating…", max_entries=8)
def evaluation(run_id: str, checkpoint: str, split: str, mtime: float):
    from core.analysis.evaluate import evaluate_run
    from core.analysis.metrics import curves
    report, arrays = evaluate_run(store, run_id, checkpoint, split)
    return report, arrays, curves(arrays["probs"], arrays["labels"])


@st.cache_resource(show_spinner=False, max_entries=2)
def split_images(config_json: str, split: str):
    from core.config import RunConfig
    from core.data.datasets import load_dataset
    return load_dataset(RunConfig.from_json(config_json)).splits[split]


path = store.checkpoint_path(run_id, checkpoint)
if not path.exists():
    st.info(f"Run {shared.run_name(run_id)} has no {checkpoint}.pt yet: it is written at the end of each epoch.")
    st.stop()
try:
    report, arrays, curves = evaluation(run_id, checkpoint, split, path.stat().st_mtime)
except (ValueError, KeyError, RuntimeError) as error:
    st.error(f"Cannot evaluate {checkpoint}.pt: {error}")
    st.stop()

classes = report["classes"]
cols = st.columns(4)
cols[0].metric("Accuracy", f"{report['accuracy']:.4f}")
cols[1].metric("Loss", f"{report['loss']:.4f}")
cols[2].metric("Macro F1", f"{report['macro']['f1']:.4f}")
cols[3].metric("Samples", f"{report['samples']:,}")
st.caption(f"{checkpoint}.pt of {run_id} (epoch {report['epoch']}, step {report['step']}) on the {split} split. "
           f"Cached in the run folder until the checkpoint changes.")

config = store.read_config(run_id)
split_data = split_images(config.to_json(), split)


picture = gradcam.tile_pictures(path, split_data) if show_gradcam else None


def tiles(with_true_class: bool):
    return lambda rows: prediction_tiles(rows, arrays, classes, split_data, names=show_names, root=config.data_path,
                                         with_true_class=with_true_class, picture=picture)


def show_clicked_cell(chart_key: str, cell_keys: tuple[str, str], n: int) -> None:
    """A click on the matrix sets the cell pickers, in a callback: before they are drawn (DESIGN.md,
    Live views). Point k of the chart's marker layer is cell (k // n, k % n)."""
    points = [p for p in st.session_state[chart_key].selection.points if "point_index" in p]
    if points:
        st.session_state[cell_keys[0]], st.session_state[cell_keys[1]] = divmod(points[0]["point_index"], n)


left, right = st.columns([3, 2])
normalise = left.toggle("Row-normalised", key="ev_norm")
# Keyed by what is evaluated: another run (other classes) or checkpoint opens on its own worst cell.
evaluated = f"{run_id}_{checkpoint}_{split}"
cell_keys = (f"ev_true_{evaluated}", f"ev_pred_{evaluated}")
for key, worst in zip(cell_keys, most_confused_cell(report["confusion_matrix"])):
    st.session_state.setdefault(key, worst)
with right:
    clickable = len(classes) <= plots.MAX_CLICKABLE_CLASSES
    st.markdown("**Samples of one cell**" + (": click it in the matrix" if clickable else ""))
    true_class = st.selectbox("True class", range(len(classes)), format_func=classes.__getitem__, key=cell_keys[0])
    predicted_class = st.selectbox("Predicted as", range(len(classes)), format_func=classes.__getitem__,
                                   key=cell_keys[1])
    cell = cell_rows(arrays, true_class, predicted_class)
    st.caption(f"{len(cell):,} sample(s) of class {classes[true_class]} predicted as {classes[predicted_class]}, "
               "most confident first; captions: confidence in the predicted class")
    if len(cell):
        gallery.paged_tiles(cell, tiles(with_true_class=False),
                            key=f"ev_cell_page_{evaluated}_{true_class}_{predicted_class}")
        feature_view.open_one_of(cell, arrays, split_data, checkpoint, split, key=f"ev_fm_{evaluated}")
# Keyed by the cell shown too: a new chart after each pick, so a click on the cell it last selected (or
# on any cell after the pickers moved) is a new selection, never plotly's toggle back to none.
chart_key = f"ev_confusion_{evaluated}_{true_class}_{predicted_class}"
# A matrix too large for the marker layer keeps plotly's drag to zoom (on_select turns drag into pan).
on_click = functools.partial(show_clicked_cell, chart_key, cell_keys, len(classes)) if clickable else "ignore"
# The container's key is the chart's stable name (.st-key-ev_confusion: docs/screenshots.py).
left.container(key="ev_confusion").plotly_chart(
    plots.confusion_heatmap(report["confusion_matrix"], classes, normalise, clickable), key=chart_key,
    on_select=on_click, selection_mode="points")

st.subheader("Per class")
table = pd.DataFrame([{"class": r["class"], "precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                       "support": r["support"], "ROC AUC": r["roc_auc"], "AP": r["average_precision"],
                       "max-F1 threshold": (r["best_f1_threshold"] or {}).get("threshold")}
                      for r in report["per_class"]])
st.dataframe(table, hide_index=True, key="ev_table",
             column_config={c: st.column_config.NumberColumn(format="%.4f")
                            for c in ("precision", "recall", "f1", "ROC AUC", "AP", "max-F1 threshold")})
st.download_button("Per-class table as CSV", table.to_csv(index=False), f"{run_id}-{checkpoint}-{split}-per-class.csv",
                   mime="text/csv", key="ev_csv")

left, right = st.columns(2)
left.plotly_chart(plots.roc_figure(curves, report), key="ev_roc")
right.plotly_chart(plots.pr_figure(curves, report), key="ev_pr")
st.plotly_chart(plots.reliability_figure(report["reliability"], report["expected_calibration_error"]),
                key="ev_reliability")

st.subheader("Misclassified, most confident first")
wrong = misclassified_rows(arrays)
if not len(wrong):
    st.success("No misclassified samples.")
else:
    st.caption(f"{len(wrong):,} misclassified of {report['samples']:,}; captions: true → predicted, confidence")
    gallery.paged_tiles(wrong, tiles(with_true_class=True), key=f"ev_wrong_page_{evaluated}", per_page=48)



def onnx_download(run_id: str) -> None:
    """model.onnx of best.pt: exported on a click (checked against torch), then offered; a failed
    export's reason stays until the next try."""
    error_key = f"ev_export_error_{run_id}"
    if not export_is_current(store, run_id) and st.button(
            "Export to ONNX", key="ev_export", help="Writes model.onnx beside best.pt (dynamic batch axis) and "
                                                    "checks it against torch on random and validation inputs"):
        with st.spinner("Exporting best.pt to ONNX and checking it against torch…"):
            from core.serving.export import export_run
            try:
                export_run(store, run_id)
                st.session_state.pop(error_key, None)
            except Exception as error:      # a failed parity check, a checkpoint we refuse, an exporter error
                st.session_state[error_key] = f"ONNX export failed, nothing to download: {error}"
    if export_is_current(store, run_id):
        onnx = export_files(store, run_id).path("onnx")
        st.download_button(f"model.onnx ({onnx.stat().st_size / 1024**2:.2f} MB)", onnx.read_bytes, f"{run_id}.onnx",
                           mime="application/octet-stream", key="ev_onnx", on_click="ignore")
        parity = (read_export_report(store, run_id) or {}).get("parity_max_abs_diff", {})
        checked = f" (max abs difference {parity['real']:.1e} on validation inputs)" if "real" in parity else ""
        st.caption(f"Exported from best.pt and checked against torch{checked}. ONNX Runtime: input `input` "
                   "[N, C, H, W] normalised with best.pt's mean/std, output `logits`.")
    elif error_key in st.session_state:
        st.error(st.session_state[error_key])
    else:
        st.caption("best.pt as ONNX, for ONNX Runtime and other runtimes; also `python -m core export RUN_ID`.")


st.subheader("Downloads")
stem = f"{run_id}-{checkpoint}-{split}"
cols = st.columns(3)


def report_html() -> str:      # built when the button is clicked (on a thread of Streamlit's, not the script's)
    from core.analysis.report import evaluation_html
    return evaluation_html(store, run_id, checkpoint, split, split_data=split_data)


cols[0].download_button("Download report (HTML)", report_html, f"{stem}-report.html", mime="text/html",
                        key="ev_report", type="primary", on_click="ignore")
cols[0].caption("One self-contained file (about 5 MB, mostly plotly.js): settings, dataset, model, training curves, "
                f"the figures and charts above, the {REPORT_MISTAKES} most confident mistakes as thumbnails.")
best = store.checkpoint_path(run_id, "best")
cols[1].download_button(f"best.pt ({best.stat().st_size / 1024**2:.2f} MB)", best.read_bytes, f"{run_id}-best.pt",
                        mime="application/octet-stream", key="ev_best", on_click="ignore")
cols[1].caption("Weights, settings, classes and normalisation: `torch.load(path, weights_only=True)`, "
                "or `core.runs.checkpoint.load_model(path)` for the model.")
with cols[2]:
    onnx_download(run_id)
