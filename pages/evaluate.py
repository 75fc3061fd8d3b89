"""Evaluate: a checkpoint on a split; confusion matrix, per-class report, ROC/PR, calibration,
the misclassified samples, and a downloadable HTML report."""
import numpy as np
import pandas as pd
import streamlit as st

from core import plots
from core.store import CHECKPOINTS, EVAL_SPLITS
from pages import shared

shared.ensure_app_navigation()

st.title("Evaluate")
run_id = shared.run_with_best_checkpoint()
store = shared.store()

cols = st.columns([1, 1, 3])
checkpoint = cols[0].radio("Checkpoint", CHECKPOINTS, horizontal=True, key="ev_ckpt")
split = cols[1].radio("Split", EVAL_SPLITS, horizontal=True, key="ev_split")


@st.cache_data(show_spinner="Evaluating…", max_entries=8)
def evaluation(run_id: str, checkpoint: str, split: str, mtime: float):
    from core.evaluate import evaluate_run
    from core.metrics import curves
    report, arrays = evaluate_run(store, run_id, checkpoint, split)
    return report, arrays, curves(arrays["probs"], arrays["labels"])


@st.cache_resource(show_spinner=False, max_entries=2)
def split_images(config_json: str, split: str):
    from core.config import RunConfig
    from core.data import load_dataset
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

left, right = st.columns([3, 2])
normalise = left.toggle("Row-normalised", key="ev_norm")
left.plotly_chart(plots.confusion_heatmap(report["confusion_matrix"], classes, normalise), key="ev_confusion")
with right:
    st.markdown("**Samples of one cell**")
    off_diagonal = np.array(report["confusion_matrix"]) * (1 - np.eye(len(classes), dtype=int))
    worst_true, worst_predicted = np.unravel_index(off_diagonal.argmax(), off_diagonal.shape)   # most confused
    true_class = st.selectbox("True class", range(len(classes)), format_func=classes.__getitem__,
                              index=int(worst_true), key="ev_true")
    predicted_class = st.selectbox("Predicted as", range(len(classes)), format_func=classes.__getitem__,
                                   index=int(worst_predicted), key="ev_pred")
    probs, labels = arrays["probs"], arrays["labels"]
    predicted = probs.argmax(1)
    cell = np.flatnonzero((labels == true_class) & (predicted == predicted_class))
    st.caption(f"{len(cell)} sample(s) of class {classes[true_class]} predicted as {classes[predicted_class]}")
    split_data = split_images(store.read_config(run_id).to_json(), split)

    def image_of(i: int) -> np.ndarray:
        image = split_data.sample(int(arrays["index"][i])).numpy()
        return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    if len(cell):
        shown = cell[np.argsort(-probs[cell, predicted_class])][:24]
        st.image([image_of(i) for i in shown], width=64,
                 caption=[f"{probs[i, predicted_class]:.2f}" for i in shown])

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

figures = [plots.confusion_heatmap(report["confusion_matrix"], classes), plots.roc_figure(curves, report),
           plots.pr_figure(curves, report),
           plots.reliability_figure(report["reliability"], report["expected_calibration_error"])]
left, right = st.columns(2)
left.plotly_chart(figures[1], key="ev_roc")
right.plotly_chart(figures[2], key="ev_pr")
st.plotly_chart(figures[3], key="ev_reliability")

st.subheader("Misclassified, most confident first")
wrong = np.flatnonzero(predicted != labels)
if not len(wrong):
    st.success("No misclassified samples.")
else:
    wrong = wrong[np.argsort(-probs[wrong].max(1))][:48]
    st.image([image_of(i) for i in wrong], width=72,
             caption=[f"{classes[labels[i]]}→{classes[predicted[i]]} {probs[i].max():.2f}" for i in wrong])
    st.caption(f"{int((predicted != labels).sum())} misclassified of {len(labels)}; captions: true→predicted confidence")


@st.cache_data(show_spinner=False, max_entries=4)
def html_report(run_id: str, checkpoint: str, split: str, mtime: float) -> str:
    from core.report import evaluation_html
    return evaluation_html(report, figures, f"Trainboard evaluation: {shared.run_name(run_id)}")


st.download_button("Download report (HTML)", html_report(run_id, checkpoint, split, path.stat().st_mtime),
                   f"{run_id}-{checkpoint}-{split}-report.html", mime="text/html", key="ev_report", type="primary")
