"""Datasets: class balance, split sizes, a sample grid per class and an augmentation preview."""
import pandas as pd
import streamlit as st

from core import plots
from core.config import SETTINGS, RunConfig
from core.data import DatasetError
from pages import forms, shared

shared.ensure_app_navigation()

PER_PAGE = 24

st.title("Datasets")


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def dataset_view(config_json: str):
    from core.browse import view_dataset
    return view_dataset(RunConfig.from_json(config_json))


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnails(config_json: str, class_index: int, page: int):
    return dataset_view(config_json).thumbnails(class_index, page, PER_PAGE)


with st.container(border=True):
    config = forms.dataset_picker()
problems = [p for p in config.validate() if "data_path" in p or "image_size" in p]
if problems:
    st.info(" ".join(problems))
    st.stop()
key = config.to_json()
try:
    view = dataset_view(key)
except DatasetError as error:
    st.error(str(error))
    st.stop()

sizes = view.sizes
cols = st.columns(5)
cols[0].metric("Classes", len(view.classes))
cols[1].metric("Train", f"{sizes['train']:,}")
cols[2].metric("Validation", f"{sizes['val']:,}")
cols[3].metric("Test", f"{sizes['test']:,}")
cols[4].metric("Input shape", " x ".join(map(str, view.input_shape)))
st.caption("Per-channel mean " + ", ".join(f"{m:.3f}" for m in view.mean) + " · std "
           + ", ".join(f"{s:.3f}" for s in view.std) + " (on the 0..1 scale"
           + (", estimated from a sample of the folder)" if view.images is None else ", training split)"))
skipped = view.skipped_title()
if skipped:
    with st.expander(skipped):
        st.dataframe(pd.DataFrame(view.skipped(), columns=["file", "reason"]), hide_index=True, key="ds_skipped")

ratio = view.imbalance()
if ratio > 3:
    st.warning(f"Imbalanced classes: the largest class has {ratio:.1f}x the samples of the smallest. "
               "Consider class_weighted_loss on the Train page.")
st.plotly_chart(plots.class_balance(view.classes, view.counts), key="class_balance")

st.subheader("Samples")
cols = st.columns([2, 1, 3])
class_index = cols[0].selectbox("Class", range(len(view.classes)), format_func=lambda i: view.classes[i],
                                key="ds_class")
pages = view.pages(class_index, PER_PAGE)
page = cols[1].number_input(f"Page (of {pages})", 1, pages, 1, key=f"ds_page_{class_index}") - 1
grid = thumbnails(key, class_index, page)
st.image(grid.images, width=72, caption=[f"#{page * PER_PAGE + i}" for i in range(len(grid.images))])
if grid.refused:
    st.caption("Blank: cannot be read. " + "; ".join(f"{path}: {reason}" for path, reason in grid.refused))

st.subheader("Augmentation preview")
with st.container(border=True):
    cols = st.columns(5)
    crop = cols[0].toggle(SETTINGS["aug_random_crop"].label, value=config.aug_random_crop, key="aug_crop")
    flip = cols[1].toggle(SETTINGS["aug_flip"].label, value=config.aug_flip, key="aug_flip")
    rotation_setting, jitter_setting = SETTINGS["aug_rotation"], SETTINGS["aug_color_jitter"]
    rotation = cols[2].slider(rotation_setting.label, int(rotation_setting.low), int(rotation_setting.high), 15,
                              key="aug_rot", help=rotation_setting.help)
    jitter = cols[3].slider(jitter_setting.label, float(jitter_setting.low), float(jitter_setting.high), 0.2,
                            key="aug_jit", help=jitter_setting.help)
    count = cols[4].slider("Versions", 1, 16, 8, key="aug_n")
    sample = st.number_input("Sample of the class above", 0, len(view.members[class_index]) - 1, 0, key="aug_idx")

import torch  # noqa: E402  (only this section needs it; the rest of the page stays light)

from core.augment import BatchPreprocessor  # noqa: E402

aug_config = RunConfig(aug_random_crop=crop, aug_flip=flip, aug_rotation=float(rotation),
                       aug_color_jitter=float(jitter))
original = view.sample(class_index, int(sample))
unit = original.float().div(255).unsqueeze(0).repeat(count, 1, 1, 1)
augmented = BatchPreprocessor(view.mean, view.std, aug_config).augment(
    unit, generator=torch.Generator().manual_seed(int(sample)))
as_images = [(a.mul(255).round().byte().permute(1, 2, 0).squeeze(-1)).numpy() for a in augmented]
st.image([original.permute(1, 2, 0).squeeze(-1).numpy()] + as_images, width=96,
         caption=["original"] + [f"augmented {i + 1}" for i in range(count)])
