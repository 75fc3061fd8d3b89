"""Predict: drop images, see what the chosen run's model says (torch or ONNX Runtime)."""
import pandas as pd
import streamlit as st

from core.analysis import plots
from core.data.images import ImageRefused, preview
from core.runs.derived import SERVING_BACKENDS
from pages.common import gradcam, shared

st.title("Predict")
run_id = shared.run_with_best_checkpoint()
store = shared.store()
best = store.checkpoint_path(run_id, "best")

cols = st.columns([2, 2, 1, 2])
backend = cols[0].radio("Backend", tuple(SERVING_BACKENDS), horizontal=True, key="pr_backend",
                        format_func={"torch": "PyTorch", "onnx": "ONNX Runtime",
                                     "onnx-int8": "ONNX Runtime int8"}.get)
top_k = cols[1].slider("Top k", 1, 10, 3, key="pr_topk")
explain = cols[2].toggle("Grad-CAM", key="pr_gradcam",
                         help="where the model looks for a class: a heat map over the image (best.pt's torch model, "
                              "whatever the backend)")


@st.cache_resource(show_spinner="Loading the model (exporting to ONNX if needed)…", max_entries=4)
def predictor(run_id: str, backend: str, mtime: float):
    from core.serving.inference import Predictor
    return Predictor(store, run_id, backend=backend)


try:
    model = predictor(run_id, backend, best.stat().st_mtime)
except Exception as error:     # an export that fails its parity check, a broken checkpoint
    st.error(f"Cannot load the {backend} model of {run_id}: {error}")
    st.stop()
explained = gradcam.explanation_source(gradcam.checkpoint_explainer(str(best), best.stat().st_mtime),
                                      model.classes) if explain else None
cols[3].caption(f"{shared.run_name(run_id)}: {len(model.classes)} classes, input {model.channels} x {model.size} x "
                f"{model.size}. Files are resized and normalised as in training.")

uploads = st.file_uploader("Drop images here (PNG, JPEG, BMP, WebP, GIF)", accept_multiple_files=True, key="pr_files")
if not uploads:
    st.stop()

rows = []
for upload in uploads:
    data = upload.getvalue()
    result = model.predict(data, top_k=top_k)
    if "error" in result:
        st.warning(f"**{upload.name}** was refused: {result['error']}")
        rows.append({"file": upload.name, "predicted": None, "probability": None, "latency ms": None,
                     "error": result["error"]})
        continue
    top = result["top_k"][0]
    rows.append({"file": upload.name, "predicted": top["class"], "probability": top["prob"],
                 "latency ms": result["latency_ms"], "error": None})
    with st.container(border=True):
        if explained:
            left, middle, heat, right = st.columns([1, 1, 1, 3])
        else:
            left, middle, right = st.columns([1, 1, 3])
        try:        # our own rendering: st.image would re-decode the raw bytes, and TIFF, PSD... fail there
            left.image(preview(data, 280), caption=upload.name, width=140)
        except ImageRefused as refused:
            left.caption(f"{upload.name}: no preview ({refused})")
        pixels = model.preprocess(data)
        middle.image(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0), width=140,
                     caption="as the model sees it")
        if explained:
            gradcam.draw(heat, explained, data)
        right.markdown(f"Predicted **{top['class']}** ({top['prob']:.1%}) · {result['latency_ms']:.1f} ms")
        right.plotly_chart(plots.topk_bars(result["top_k"]), key=f"topk_{upload.file_id}")

st.subheader("All files")
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, key="pr_table", placeholder=shared.MISSING,
             column_config={"probability": st.column_config.NumberColumn(format="%.4f"),
                            "latency ms": st.column_config.NumberColumn(format="%.1f")})
st.download_button("Results as CSV", table.to_csv(index=False), f"{run_id}-predictions.csv", mime="text/csv",
                   key="pr_csv")
