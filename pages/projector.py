"""Projector: what a checkpoint's model made of a split, its features (the layer its head reads) in 2-D
by PCA, t-SNE or UMAP; coloured by class, prediction, correctness or confidence; hover a point for its
image, click one for it large with its nearest neighbours and Grad-CAM, lasso or box a group for a
gallery."""
import streamlit as st

from core.analysis import plots
from core.analysis.projection import METHOD_LABELS, missing
from core.runs.derived import EMBEDDING_SPLITS, PROJECTIONS
from core.runs.layout import CHECKPOINTS
from pages.common import jobs_view, projector_view, shared

st.title("Projector")
run_id = shared.run_with_best_checkpoint()
store, jobs = shared.store(), shared.jobs()

cols = st.columns([1, 1, 2, 2])
checkpoint = cols[0].radio("Checkpoint", CHECKPOINTS, horizontal=True, key="pj_ckpt")
split = cols[1].radio("Split", EMBEDDING_SPLITS, index=1, horizontal=True, key="pj_split")
method = cols[2].radio("Map", PROJECTIONS, horizontal=True, key="pj_method",
                       format_func=lambda m: METHOD_LABELS[m] + (" (not installed)" if missing(m) else ""),
                       help="PCA is instant; t-SNE (openTSNE) and UMAP show neighbourhoods better and take "
                            "seconds to minutes (made once, in the background, then kept in the run folder)")
colour = cols[3].selectbox("Colour by", plots.PROJECTOR_COLOURINGS, key="pj_colour")

if missing(method):
    st.info(f"{METHOD_LABELS[method]} needs a library that is not installed on this server: `{missing(method)}`, "
            "then restart it. PCA and t-SNE work as they are.")
    st.stop()
path = store.checkpoint_path(run_id, checkpoint)
if not path.exists():
    st.info(f"Run {shared.run_name(run_id)} has no {checkpoint}.pt yet: it is written at the end of each epoch.")
    st.stop()

job_key = f"pj_job:{run_id}:{checkpoint}:{split}:{method}"
found = projector_view.projector_map(run_id, checkpoint, split, method,
                                     projector_view.map_stamp(run_id, checkpoint, split, method))
if found is None:
    failed = st.session_state.pop(f"{job_key}_result", {}).get("error")
    if failed:
        st.error(f"The {METHOD_LABELS[method]} map could not be made: {failed}")
        if not st.button("Try again", key="pj_retry"):
            st.stop()
    if job_key not in st.session_state:
        st.session_state[job_key] = jobs.project(run_id, checkpoint, split, method)
    st.caption(f"Making the {METHOD_LABELS[method]} map of {split} for {checkpoint}.pt (the features first, when "
               "this checkpoint has none yet); it is kept in the run folder, so it is made once.")
    jobs_view.follow(job_key, "Mapping…")
    st.stop()

coords, arrays, record = found
classes = record["classes"]
probs = arrays["probs"]
preds = probs.argmax(1)
figure = plots.projector_scatter(coords, arrays["labels"], preds, probs.max(1), classes, colour)
wrong = int((preds != arrays["labels"]).sum())
st.caption(f"{len(coords):,} samples of {split}, {record['dimensions']} features each ({checkpoint}.pt, epoch "
           f"{record['epoch']}), {wrong:,} predicted wrong. Hover a point for its image (#row: true → predicted, "
           "confidence); click one for its neighbours and Grad-CAM; pick the box or lasso above the map for a group.")
key = f"pj_map_{run_id}_{checkpoint}_{split}_{method}"
url = f"/api/thumbnail?run={run_id}&checkpoint={checkpoint}&split={split}&row="
rows = projector_view.draw_map(figure, key, url)
if len(rows) == 1:
    projector_view.sample_view(run_id, checkpoint, split, rows[0], arrays, classes)
elif rows:
    projector_view.selection_gallery(run_id, split, rows, arrays, classes, key=f"{key}_page")
