"""Datasets: class balance, split sizes, a sample grid per class, an augmentation preview, and images
people add (a zip of class folders, or images per class) kept as image-folder datasets, and deleted
here too."""
import hashlib
from pathlib import Path

import pandas as pd
import streamlit as st

from core.analysis import plots
from core.config import SETTINGS, RunConfig
from core.data import imports, uploads
from core.data.datasets import DatasetError
from pages.common import forms, selection, shared

PER_PAGE = 24

st.title("Datasets")


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def dataset_view(config_json: str):
    from core.data.browse import view_dataset
    return view_dataset(RunConfig.from_json(config_json))


@st.cache_data(show_spinner=False, max_entries=256)
def thumbnails(config_json: str, class_index: int, page: int):
    return dataset_view(config_json).thumbnails(class_index, page, PER_PAGE)


UPLOAD_RESULT = "up_result"      # the last import's outcome, shown until the next one
UPLOAD_ROUND = "up_round"        # bumped after an import: fresh (empty) uploaders
DELETE_RESULT = "up_deleted"     # the last deletion's outcome, (deleted, message), shown until the next one
DELETE_CHOICE = "up_delete_name"
DELETE_PART = "up_delete_part"    # + the dataset's name: WHOLE_DATASET, or the class to delete
WHOLE_DATASET = "the whole dataset"
IMAGES_CHOICE = "up_delete_images_picked"   # + class and page: the Samples grid's files picked for deletion
IMAGES_RESULT = "up_images_deleted"         # the last image deletion's outcome, (deleted, message)


def _uploader_key(kind: str) -> str:
    return f"up_{kind}_{st.session_state.get(UPLOAD_ROUND, 0)}"


def _imported(result: imports.ImportResult) -> None:
    """After an import: show its outcome, empty the uploaders, and pick the dataset above."""
    st.session_state[UPLOAD_RESULT] = result
    st.session_state.pop(DELETE_RESULT, None)
    st.session_state[UPLOAD_ROUND] = st.session_state.get(UPLOAD_ROUND, 0) + 1
    st.session_state["ds_name"], st.session_state["ds_path"] = "image-folder", str(result.path)
    dataset_view.clear()           # the dataset may be one already on view, now with more images
    thumbnails.clear()


def _import_zip(root) -> None:
    upload = st.session_state.get(_uploader_key("zip"))
    if upload is None:
        st.session_state[UPLOAD_RESULT] = "Choose a zip file first."
        return
    name = st.session_state.get("up_zip_name", "").strip() or uploads.suggest_name(upload.name)
    try:
        _imported(imports.import_zip(upload, root, name, add=st.session_state.get("up_add", False)))
    except uploads.UploadRefused as refused:
        st.session_state[UPLOAD_RESULT] = f"{upload.name} was not imported: {refused}"


def _add_images(root) -> None:
    files = st.session_state.get(_uploader_key("images")) or []
    name, class_name = st.session_state.get("up_class_dataset", "").strip(), st.session_state.get("up_class", "")
    if not name or not files:
        st.session_state[UPLOAD_RESULT] = ("Name the dataset first." if not name
                                           else "Drop some images for the class first.")
        return
    try:
        _imported(imports.add_images(root, name, class_name, [(f.name, f.getvalue()) for f in files]))
    except uploads.UploadRefused as refused:
        st.session_state[UPLOAD_RESULT] = f"Nothing was added: {refused}"


def _delete_dataset(root) -> None:
    """Button callback (before the picker draws, so it may change the picker's choice): delete the
    dataset chosen, or its class chosen; when the dataset was the picked one the picker falls back
    to the default dataset."""
    name = st.session_state.get(DELETE_CHOICE)
    part = st.session_state.get(f"{DELETE_PART}_{name}", WHOLE_DATASET)
    try:
        if part != WHOLE_DATASET:
            dataset, removed = uploads.remove_class(root, name, part, shared.store())
        else:
            dataset = uploads.delete_dataset(root, name, shared.store())
    except uploads.DatasetRefused as refused:
        st.session_state[DELETE_RESULT] = (False, f"Nothing was deleted: {refused}")
        return
    if part != WHOLE_DATASET:
        done = (f"Deleted class {part} of {dataset.name} and its {removed:,} images; {len(dataset.counts)} classes "
                f"and {dataset.images:,} images are left.")
    else:
        done = f"Deleted {dataset.name} and its {dataset.images:,} images."
    st.session_state[DELETE_RESULT] = (True, f"{done} Runs trained on it keep their curves; evaluating or resuming "
                                             "them needs the data.")
    st.session_state[DELETE_CHOICE] = None
    st.session_state.pop(f"{DELETE_PART}_{name}", None)
    st.session_state.pop(UPLOAD_RESULT, None)         # it may describe what was just deleted
    dataset_view.clear()
    thumbnails.clear()
    kept = st.session_state.setdefault(selection.KEPT, {})
    if part == WHOLE_DATASET and any(uploads.holds(dataset.path, where.get("ds_path", ""))
                                     for where in (st.session_state, kept)):
        selection.choose_dataset(SETTINGS["dataset"].default)
        st.session_state["ds_path"] = kept["ds_path"] = ""


def delete_section(root, datasets: list[uploads.ManagedDataset]) -> None:
    """Delete one of the uploaded datasets, asked for in a popover as the Train page's Delete is."""
    outcome = st.session_state.get(DELETE_RESULT)
    if outcome is not None:
        (st.success if outcome[0] else st.error)(outcome[1])
    if not datasets:
        return
    with st.popover("Delete a dataset or a class", icon=":material/delete:"):
        by_name = {d.name: d for d in datasets}
        name = st.selectbox("Dataset", list(by_name), index=None, key=DELETE_CHOICE, placeholder="Pick one")
        if name is not None:
            counts = by_name[name].counts
            part = st.selectbox("What to delete", [WHOLE_DATASET, *counts], key=f"{DELETE_PART}_{name}",
                                format_func=lambda c: c if c == WHOLE_DATASET else f"class {c} ({counts[c]:,} images)",
                                help="a class: its folder and images; a dataset keeps at least one class")
            what = (f"**{name}** and its {by_name[name].images:,} images" if part == WHOLE_DATASET
                    else f"class **{part}** of {name} and its {counts[part]:,} images")
            st.write(f"Delete {what} from `{root}`? Runs trained on it stay listed with their curves, but "
                     "evaluating or resuming them needs the data.")
        st.button("Yes, delete it", type="primary", key="up_delete", disabled=name is None,
                  on_click=_delete_dataset, args=(root,))


def _delete_images(name: str, key: str) -> None:
    """Button callback: delete the images picked in the Samples grid's popover (widget `key`)."""
    picked = st.session_state.get(key) or []
    try:
        dataset, removed = uploads.remove_images(shared.datasets_dir(), name, picked, shared.store())
    except uploads.DatasetRefused as refused:
        st.session_state[IMAGES_RESULT] = (False, f"Nothing was deleted: {refused}")
        return
    st.session_state[IMAGES_RESULT] = (True, f"Deleted {removed} image{'s' if removed != 1 else ''} from "
                                             f"{dataset.name}, which now has {dataset.images:,} images.")
    st.session_state[key] = []
    dataset_view.clear()
    thumbnails.clear()


def delete_images_section(name: str, files: list[str], page: int, key: str) -> None:
    """Under the grid of an uploaded dataset: delete some of the images shown (#n as captioned);
    `key` names the grid's class and page, so another page starts with nothing picked."""
    outcome = st.session_state.get(IMAGES_RESULT)
    if outcome is not None:
        (st.success if outcome[0] else st.error)(outcome[1])
    numbers = {file: page * PER_PAGE + i for i, file in enumerate(files)}
    with st.popover("Delete images shown", icon=":material/delete:"):
        picked = st.multiselect("Images", list(numbers), key=key, placeholder="Pick by number",
                                format_func=lambda f: f"#{numbers[f]} {Path(f).name}")
        if picked:
            st.write(f"Delete {len(picked)} image{'s' if len(picked) != 1 else ''} from **{name}**? Runs trained on "
                     "it stay listed, but evaluating or resuming them needs the data.")
        st.button("Yes, delete them", type="primary", key="up_delete_images", disabled=not picked,
                  on_click=_delete_images, args=(name, key))


def upload_section() -> None:
    """Add your own images: a zip of class folders, or images dropped per class (Teachable Machine)."""
    root = shared.datasets_dir()
    limit = st.get_option("server.maxUploadSize")
    with st.expander("Add your own images", icon=":material/upload:"):
        st.caption(f"Each becomes an image-folder dataset, kept in `{root}`. Files up to {limit:,} MB each; "
                   "every image is checked, and files that are not images we can read are left out and named.")
        name_help = f"Use {uploads.NAME_RULE}."
        zip_tab, class_tab = st.tabs(["A zip of class folders", "Images per class"])
        # Forms: what was typed arrives with the click, however quickly the button follows the typing.
        with zip_tab, st.form("up_zip_form", border=False, enter_to_submit=False):
            st.text_input("Dataset name", key="up_zip_name", max_chars=64, help=name_help,
                          placeholder="blank: the zip's file name")
            st.file_uploader("Zip with one folder of images per class (cat/1.png, dog/1.png, ...)", type=["zip"],
                             key=_uploader_key("zip"))
            st.checkbox("If the name is taken, add the images to that dataset", key="up_add")
            st.form_submit_button("Import", key="up_import", on_click=_import_zip, args=(root,), type="primary")
        with class_tab, st.form("up_class_form", border=False, enter_to_submit=False):
            cols = st.columns(2)
            cols[0].text_input("Dataset name", key="up_class_dataset", max_chars=64, help=name_help,
                               placeholder="a new one, or one of yours")
            cols[1].text_input("Class name", key="up_class", max_chars=uploads.CLASS_NAME_MAX, placeholder="e.g. cat",
                               help="A new class is made, or the images join the class of that name.")
            st.file_uploader("Images of this class", accept_multiple_files=True, key=_uploader_key("images"))
            st.form_submit_button("Add to class", key="up_add_images", on_click=_add_images, args=(root,),
                                  type="primary")
        result = st.session_state.get(UPLOAD_RESULT)
        if isinstance(result, str):
            st.error(result)
        elif result is not None:
            st.success(result.describe() + " It is picked above.")
            st.dataframe(pd.DataFrame({"class": list(result.counts), "added": [result.added.get(c, 0) for c in
                                       result.counts], "images": list(result.counts.values())}),
                         hide_index=True, key="up_counts")
            if result.refused:
                with st.expander(f"{len(result.refused)} file{'s' if len(result.refused) != 1 else ''} not imported"):
                    st.dataframe(pd.DataFrame(result.refused, columns=["file", "reason"]), hide_index=True,
                                 key="up_refused")
        datasets = uploads.list_datasets(root)
        if datasets:
            st.caption("Your datasets: pick one under Uploaded images above, once Dataset is image folder.")
            st.dataframe(pd.DataFrame({"dataset": [d.name for d in datasets],
                                       "classes": [len(d.counts) for d in datasets],
                                       "images": [d.images for d in datasets]}), hide_index=True,
                         key="up_datasets")
        delete_section(root, datasets)


with st.container(border=True):
    config = forms.dataset_picker()
upload_section()
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
# Keyed by the dataset's classes: another dataset's picker starts at its own first class.
classes_key = hashlib.sha1("\n".join(view.classes).encode()).hexdigest()[:12]
class_index = cols[0].selectbox("Class", range(len(view.classes)), format_func=lambda i: view.classes[i],
                                key=f"ds_class_{classes_key}")
pages = view.pages(class_index, PER_PAGE)
page = cols[1].number_input(f"Page (of {pages})", 1, pages, 1, key=f"ds_page_{classes_key}_{class_index}") - 1
grid = thumbnails(key, class_index, page)
st.image(grid.images, width=72, caption=[f"#{page * PER_PAGE + i}" for i in range(len(grid.images))])
if grid.refused:
    st.caption("Blank: cannot be read. " + "; ".join(f"{path}: {reason}" for path, reason in grid.refused))
uploaded = uploads.dataset_at(shared.datasets_dir(), config.data_path) if config.dataset == "image-folder" else None
if uploaded:
    delete_images_section(uploaded, view.members[class_index][page * PER_PAGE:(page + 1) * PER_PAGE], page,
                          key=f"{IMAGES_CHOICE}_{classes_key}_{class_index}_{page}")

st.subheader("Augmentation preview")
with st.container(border=True):
    cols = st.columns(5)
    # Keyed by the dataset: another one starts from its own defaults (a folder's crop and flip on).
    crop = cols[0].toggle(SETTINGS["aug_random_crop"].label, value=config.aug_random_crop,
                          key=f"aug_crop_{config.dataset}")
    flip = cols[1].toggle(SETTINGS["aug_flip"].label, value=config.aug_flip, key=f"aug_flip_{config.dataset}")
    rotation_setting, jitter_setting = SETTINGS["aug_rotation"], SETTINGS["aug_color_jitter"]
    rotation = cols[2].slider(rotation_setting.label, int(rotation_setting.low), int(rotation_setting.high), 15,
                              key="aug_rot", help=rotation_setting.help)
    jitter = cols[3].slider(jitter_setting.label, float(jitter_setting.low), float(jitter_setting.high), 0.2,
                            key="aug_jit", help=jitter_setting.help)
    count = cols[4].slider("Versions", 1, 16, 8, key="aug_n")
    sample = st.number_input("Sample of the class above", 0, len(view.members[class_index]) - 1, 0, key="aug_idx")

import torch  # noqa: E402  (only this section needs it; the rest of the page stays light)

from core.data.augment import BatchPreprocessor  # noqa: E402

aug_config = RunConfig(aug_random_crop=crop, aug_flip=flip, aug_rotation=float(rotation),
                       aug_color_jitter=float(jitter))
original = view.sample(class_index, int(sample))
unit = original.float().div(255).unsqueeze(0).repeat(count, 1, 1, 1)
augmented = BatchPreprocessor(view.mean, view.std, aug_config).augment(
    unit, generator=torch.Generator().manual_seed(int(sample)))
as_images = [(a.mul(255).round().byte().permute(1, 2, 0).squeeze(-1)).numpy() for a in augmented]
st.image([original.permute(1, 2, 0).squeeze(-1).numpy()] + as_images, width=96,
         caption=["original"] + [f"augmented {i + 1}" for i in range(count)])
