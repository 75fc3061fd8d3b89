"""The Projector page's parts: the map (a WebGL scatter whose hover shows the sample's thumbnail), the
view of a clicked sample (large, its classes, its 8 nearest neighbours in feature space, its
Grad-CAM), and the gallery of a lasso or box selection. The maps are made by a child process
(core.analysis.projection); the page only reads what it left in the run folder."""
from __future__ import annotations

import io

import numpy as np
import streamlit as st

from core.analysis.gallery import tiles_html
from pages.common import feature_view, site

NEIGHBOURS = 8
THUMBNAIL_SIDE = 96

# Shows the hovered point's thumbnail beside the pointer: plotly's own hover label holds text only.
# It listens to the chart Streamlit drew (found by its key), and asks GET /api/thumbnail for the
# sample of the point's row, the point's customdata: the right image whatever trace the point is in.
HOVER_JS = """
export default function(component) {
  const { data, parentElement } = component;
  let img = parentElement.querySelector('img.tb-hover');
  if (!img) {
    img = document.createElement('img');
    img.className = 'tb-hover';
    img.style.cssText = 'position:fixed;display:none;z-index:1000;width:96px;height:96px;' +
      'image-rendering:pixelated;border:1px solid #9aa5b1;background:#fff;pointer-events:none';
    parentElement.appendChild(img);
  }
  let tries = 0;
  function attach() {
    const plot = document.querySelector('.st-key-' + data.chart + ' .js-plotly-plot');
    if (!plot || !plot.on) { if (tries++ < 200) setTimeout(attach, 100); return; }
    if (plot.__tbHoverUrl === data.url) return;
    plot.__tbHoverUrl = data.url;
    plot.removeAllListeners && plot.removeAllListeners('plotly_hover');
    plot.on('plotly_hover', (event) => {
      const point = event.points[0];
      img.src = data.url + point.customdata;
      img.dataset.row = point.customdata;
      img.style.left = (event.event.clientX + 16) + 'px';
      img.style.top = (event.event.clientY + 16) + 'px';
      img.style.display = 'block';
    });
    plot.on('plotly_unhover', () => { img.style.display = 'none'; });
  }
  attach();
}
"""
_hover = st.components.v2.component("trainboard_hover_thumbnails", js=HOVER_JS, isolate_styles=False)


@st.cache_resource(show_spinner="Loading the map…", max_entries=4)
def projector_map(run_id: str, checkpoint: str, split: str, method: str, stamp: tuple):
    """(coords, arrays, record) from the run folder, or None while it is not made (`stamp`: the cache's
    files, so a new map is read when it appears)."""
    from core.analysis.projection import cached_map
    from pages.common import shared
    return cached_map(shared.store(), run_id, checkpoint, split, method)


def map_stamp(run_id: str, checkpoint: str, split: str, method: str) -> tuple:
    from core.runs.derived import embedding_files, projection_files
    from pages.common import shared
    stamps = []
    for files in (embedding_files(shared.store(), run_id, checkpoint, split),
                  projection_files(shared.store(), run_id, checkpoint, split, method)):
        try:
            stat = files.path("report").stat()
            stamps.append((stat.st_mtime_ns, stat.st_size, files.identity()["mtime_ns"]))
        except FileNotFoundError:
            stamps.append(None)
    return tuple(stamps)


@st.cache_resource(show_spinner="Reading the data…", max_entries=2)
def split_of(config_json: str, split: str):
    from core.config import RunConfig
    from core.data.datasets import load_dataset
    return load_dataset(RunConfig.from_json(config_json)).splits[split]


def run_split(run_id: str, split: str):
    from pages.common import shared
    return split_of(shared.store().read_config(run_id).to_json(), split)


def thumbnail_png(run_id: str, checkpoint: str, split: str, row: int) -> bytes:
    """The PNG of the sample behind row `row` of a map (GET /api/thumbnail); KeyError when there is none."""
    from PIL import Image

    from core.analysis.evaluate import sample_image
    from core.analysis.projection import METHOD_LABELS
    found = next((found for method in METHOD_LABELS
                  if (found := projector_map(run_id, checkpoint, split, method,
                                             map_stamp(run_id, checkpoint, split, method))) is not None), None)
    if found is None or not 0 <= row < len(found[1]["index"]):
        raise KeyError(row)
    image = Image.fromarray(sample_image(run_split(run_id, split), int(found[1]["index"][row])))
    image = image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.NEAREST if min(image.size) < 48 else Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def draw_map(figure, key: str, thumbnails_url: str):
    """The scatter, selectable by a click, a box or a lasso, with the hover thumbnails; returns the
    selection's rows."""
    event = st.plotly_chart(figure, key=key, on_select="rerun", selection_mode=("points", "box", "lasso"),
                            config={"displaylogo": False})
    _hover(data={"chart": key, "url": thumbnails_url}, key=f"{key}_hover")
    points = (event.selection.points if event and event.selection else None) or []
    return sorted({int(point["customdata"]) for point in points if "customdata" in point})


def sample_view(run_id: str, checkpoint: str, split: str, row: int, arrays: dict, classes: list[str]) -> None:
    """One clicked sample: large, its classes and confidence, its nearest neighbours, its Grad-CAM."""
    from core.analysis.evaluate import prediction_tiles, sample_image, sample_name
    from core.analysis.projection import nearest
    part = run_split(run_id, split)
    position = int(arrays["index"][row])
    probs = arrays["probs"][row]
    true, predicted = int(arrays["labels"][row]), int(probs.argmax())
    image = sample_image(part, position)
    left, middle, right = st.columns([1, 1, 2])
    left.image(_enlarged(image), width=180, caption=sample_name(part, position))
    verdict = "right" if true == predicted else "wrong"
    right.markdown(f"**{sample_name(part, position)}**: true **{classes[true]}**, predicted **{classes[predicted]}** "
                   f"({probs[predicted]:.1%}, {verdict})")
    _gradcam(middle, run_id, checkpoint, part, position, predicted, classes)
    if right.button("Its feature maps", key=f"pj_maps_{split}_{position}",
                    help="the Model page's feature maps of this sample, for the chosen run's checkpoint",
                    on_click=feature_view.show_sample, args=(checkpoint, split, position)):
        st.switch_page(site.page_path("model"))
    rows = nearest(arrays["features"], row, NEIGHBOURS)
    right.caption(f"Its {len(rows)} nearest neighbours in feature space (cosine), nearest first:")
    right.html(tiles_html(prediction_tiles(rows, arrays, classes, part)))


def _gradcam(box, run_id: str, checkpoint: str, part, position: int, predicted: int, classes: list[str]) -> None:
    from core.models.gradcam import CannotExplain
    from pages.common import gradcam, shared
    path = shared.store().checkpoint_path(run_id, checkpoint)
    explainer = gradcam.checkpoint_explainer(str(path), path.stat().st_mtime)
    pixels = np.asarray(part.sample(position))
    try:
        explanation = explainer.explain(pixels, predicted)
    except CannotExplain as error:
        box.caption(f"No Grad-CAM: {error}")
        return
    box.image(explainer.overlay(pixels, explanation), width=180,
              caption=f"Grad-CAM: where it looks for {classes[predicted]} ({explanation.layer})")


def _enlarged(image: np.ndarray, side: int = 256) -> np.ndarray:
    """A small sample shown large with its pixels kept sharp (a digit is 8 to 32 pixels)."""
    from PIL import Image
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    scale = max(1, side // max(picture.size))
    return np.asarray(picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST))


def selection_gallery(run_id: str, split: str, rows: list[int], arrays: dict, classes: list[str], key: str) -> None:
    """The samples of a lasso or box, the most confident first, as paged tiles."""
    from core.analysis.evaluate import prediction_tiles
    from pages.common import gallery
    part = run_split(run_id, split)
    rows = np.asarray(rows)
    rows = rows[np.argsort(-arrays["probs"][rows].max(1), kind="stable")]
    wrong = int((arrays["probs"][rows].argmax(1) != arrays["labels"][rows]).sum())
    st.markdown(f"**{len(rows):,} selected**, {wrong:,} of them predicted wrong; the most confident first:")
    gallery.paged_tiles(rows, lambda page: prediction_tiles(page, arrays, classes, part), key=key)
