"""Widgets derived from the settings' own descriptions (core.config.SETTINGS): the dataset picker
(with the model on the Train page: picking one proposes its natural image size), the recipes, and the
Train / Clone form. Not a page: app.py's st.navigation lists the pages.

A widget's key names the dataset it was drawn for, so switching the dataset draws fresh widgets with
that dataset's defaults instead of keeping the first dataset's values.
"""
from __future__ import annotations

import dataclasses

import streamlit as st

from core.config import FOLDER_DATASETS, GROUPS, RECIPES, SETTINGS, RunConfig, Setting
from core.data import uploads
from core.data.folders import native_shape, proposed_config
from core.models.registry import MODEL_SPECS
from pages.common import selection, shared

COLUMNS = 4
# What the picker above the form sets: the data, and the model (outside the form, so that choosing
# one reruns the page and proposes the image size its weights were trained at).
DATA_FIELDS = tuple(name for name, s in SETTINGS.items() if s.group == "data") + ("model",)


def setting_widget(box, setting: Setting, value, key: str):
    """The widget for one setting, showing `value` (or the default when `value` does not fit)."""
    help_text = setting.help or None
    if setting.kind is bool:
        return box.checkbox(setting.label, value=value if isinstance(value, bool) else setting.default,
                            key=key, help=help_text)
    if setting.choices:
        options = list(setting.choices)
        index = options.index(value if value in options else setting.default)
        labels = setting.choice_labels or {}
        return box.selectbox(setting.label, options, index=index, key=key, help=help_text,
                             format_func=lambda choice: labels.get(choice, str(choice)))
    if setting.kind in (int, float):
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        shown = setting.kind(value if fits else setting.default)
        number = box.number_input(setting.label, value=shown, step=setting.step, format=setting.format,
                                  key=key, help=help_text)
        for word in setting.also:       # batch_size: a number, or "auto"
            if box.checkbox(f"{word} (CUDA)" if word == "auto" else word, value=value == word,
                            key=f"{key}_{word}"):
                return word
        return number
    return box.text_input(setting.label, value=value if isinstance(value, str) else "", key=key, help=help_text,
                          max_chars=setting.max_length)


def _draw_group(box, config: RunConfig, group: str, key_prefix: str) -> dict:
    """The group's widgets; a setting that means nothing for the model picked (freeze_backbone for a
    network without ImageNet weights) is not drawn, and keeps its value for when one is picked."""
    pretrainable = MODEL_SPECS[config.model].pretrainable if config.model in MODEL_SPECS else True
    names = [name for name, s in SETTINGS.items() if s.group == group and name not in DATA_FIELDS
             and (pretrainable or not s.pretrained_only)]
    values = {name: getattr(config, name) for name, s in SETTINGS.items()
              if s.group == group and name not in DATA_FIELDS and name not in names}
    for start in range(0, len(names), COLUMNS):
        columns = box.columns(COLUMNS)
        for column, name in zip(columns, names[start:start + COLUMNS]):
            values[name] = setting_widget(column, SETTINGS[name], getattr(config, name), f"{key_prefix}_{name}")
    return values


def settings_form(config: RunConfig, key_prefix: str) -> dict:
    """Every setting but the data ones, as widgets showing `config`; returns {name: value}.
    Call inside st.form. The last group is folded under 'More settings'."""
    values = {}
    if config.model in MODEL_SPECS and not MODEL_SPECS[config.model].pretrainable:
        st.caption(f"{config.model} starts from random weights. The imagenet-* models start from ImageNet "
                   "weights, with settings to freeze or fine-tune their backbone.")
    for group in GROUPS[1:-1]:
        values.update(_draw_group(st, config, group, key_prefix))
    with st.expander("More settings"):
        values.update(_draw_group(st, config, GROUPS[-1], key_prefix))
    return {name: value.strip() if isinstance(value, str) else value for name, value in values.items()}


def dataset_picker(container=None, pick_model: bool = False, model: str | None = None) -> RunConfig:
    """Dataset + its options; the choice is kept in session_state and shared by the pages. Returns
    the dataset's default config with the picked data settings. With `pick_model` the model is picked
    here too (the Train page); the image size proposed is the model's (`model`, or the one picked)
    natural size when it has one (an ImageNet network's 224), else the data's."""
    box = container or st
    arrived = _arrived()
    for key in ("ds_name", "ds_path", "ds_csv", "ds_model"):
        _restore(key, arrived)
    dataset_setting = SETTINGS["dataset"]
    dataset = box.selectbox(dataset_setting.label, dataset_setting.choices, key="ds_name",
                            format_func=dataset_setting.choice_labels.get, help=dataset_setting.help)
    size_key, channels_key = f"ds_size_{dataset}", f"ds_channels_{dataset}"
    _resend_on_remount(dataset, ("ds_path", "ds_csv", size_key, channels_key))
    data_path = labels_csv = ""
    if dataset in FOLDER_DATASETS:
        if dataset == "image-folder":
            _uploaded_picker(box)
        data_path = box.text_input(SETTINGS["data_path"].label, key="ds_path", placeholder="/path/to/images")
        if dataset == "csv-folder":
            labels_csv = box.text_input(SETTINGS["labels_csv"].label, key="ds_csv",
                                        placeholder="default: <folder>/labels.csv")
    elif dataset != "digits":
        data_path = box.text_input(SETTINGS["data_path"].label, key="ds_path", placeholder="default: ./data",
                                   help=SETTINGS["data_path"].help)
    data_path, labels_csv = data_path.strip(), labels_csv.strip()
    cols = box.columns(3 if pick_model else 2)
    if pick_model:
        model_setting = SETTINGS["model"]
        _propose("ds_model", RunConfig.for_dataset(dataset).model)     # cifar10 starts on resnet18
        model = cols[0].selectbox(model_setting.label, model_setting.choices, key="ds_model",
                                  help=model_setting.help)
        cols = cols[1:]
    chosen = {"model": model} if model else {}
    defaults = proposed_config(dataset, data_path=data_path, labels_csv=labels_csv, **chosen)
    native = native_shape(dataset, data_path, labels_csv) if dataset in FOLDER_DATASETS else None
    note = box.empty()      # above the size, written once the size shown is known
    size, channels = SETTINGS["image_size"], SETTINGS["channels"]
    for key in (size_key, channels_key):
        _restore(key, arrived)
    _propose(size_key, defaults.image_size)
    _propose(channels_key, defaults.channels)
    image_size = cols[0].number_input(size.label, int(size.low), int(size.high), key=size_key, help=size.help)
    picked_channels = cols[1].selectbox(channels.label, channels.choices, key=channels_key,
                                        format_func=channels.choice_labels.get)
    caption = size_caption(model, native, defaults, int(image_size))
    if caption:
        note.caption(caption)
    for key in ("ds_name", "ds_path", "ds_csv", "ds_model", size_key, channels_key):
        if key in st.session_state:
            st.session_state[selection.KEPT][key] = st.session_state[key]
    selection.write_selection_to_url()       # app.py wrote the address before this page drew the picker
    return dataclasses.replace(defaults, image_size=int(image_size), channels=int(picked_channels))


def size_caption(model: str | None, native, proposed: RunConfig, image_size: int) -> str | None:
    """Where the proposed image size comes from, and what the size shown (a person's own) means."""
    label = SETTINGS["image_size"].label.lower()
    natural = MODEL_SPECS[model].natural_size if model else None
    if natural:
        trained = f"{model}'s weights were trained at {natural}x{natural}"
        if image_size == natural:
            return f"{trained}: proposed {label} {natural}."
        return (f"{trained}; at {image_size}x{image_size} it trains faster, and may be less accurate "
                f"(smallest allowed {MODEL_SPECS[model].min_input_size}).")
    if native:
        shape = f"{native.describe()}: proposed {label} {proposed.image_size}, " \
                f"{SETTINGS['channels'].choice_labels[proposed.channels]}."
        return shape if image_size == proposed.image_size else f"{shape} Now {image_size}."
    return None


def recipe_buttons(container=None) -> None:
    """One button per recipe (core.config.RECIPES): a click fills the picker and the form with it."""
    box = container or st
    cols = box.columns(len(RECIPES) + 3)
    import torch
    for column, recipe in zip(cols, RECIPES.values()):
        caution = (f"The {recipe.label} recipe is sized for a GPU, and this machine has none: its "
                   f"{recipe.values.get('epochs')} epochs would take hours here. Fewer epochs and a smaller "
                   "model train in minutes.") if recipe.gpu_sized and not torch.cuda.is_available() else None
        column.button(f"Recipe: {recipe.label}", key=f"recipe_{recipe.name}", help=recipe.description,
                      on_click=fill_form, args=(recipe.config(), f"the {recipe.label} recipe", caution))


def fill_form(config: RunConfig, source: str, caution: str | None = None) -> None:
    """Button callback (runs before the widgets exist, so it may set their state): the picker and the
    form show `config`; the Train page says where it came from, and `caution` beside it."""
    st.session_state["clone_config"] = config.to_dict()
    st.session_state["clone_of"] = source
    st.session_state["clone_caution"] = caution
    st.session_state["form_version"] = st.session_state.get("form_version", 0) + 1
    if st.session_state.get("ds_name") != config.dataset:
        st.session_state["ds_path"] = config.data_path
    for name, key in (("dataset", "ds_name"), ("model", "ds_model"), ("image_size", f"ds_size_{config.dataset}"),
                      ("channels", f"ds_channels_{config.dataset}"), ("labels_csv", "ds_csv")):
        st.session_state[key] = getattr(config, name)


def _uploaded_picker(box) -> None:
    """The datasets uploaded on the Datasets page, offered as the Folder (which stays the truth)."""
    root = shared.datasets_dir()
    names = uploads.dataset_names(root)
    if not names:
        return
    paths = {name: str(root / name) for name in names}
    typed = str(st.session_state.get("ds_path", "")).strip()
    st.session_state["ds_uploaded"] = next((name for name, path in paths.items() if path == typed), None)
    box.selectbox("Uploaded images", names, key="ds_uploaded", placeholder="Pick one to use as the folder",
                  on_change=_use_uploaded, args=(paths,), help=f"Datasets added on the Datasets page, kept in {root}")


def _use_uploaded(paths: dict[str, str]) -> None:
    name = st.session_state.get("ds_uploaded")
    if name in paths:
        st.session_state["ds_path"] = paths[name]




def _restore(key: str, arrived: bool = False) -> None:
    """Streamlit drops a widget's value when a page without that widget runs; the picker's values
    live on in a plain key, so the dataset chosen on one page is the one on the next."""
    kept = st.session_state.setdefault(selection.KEPT, {})
    if (arrived or key not in st.session_state) and key in kept:
        st.session_state[key] = kept[key]


DRAWN_FOR = "ds_drawn_for"     # the dataset whose widgets the picker drew last


def _resend_on_remount(dataset: str, keys: tuple[str, ...]) -> None:
    """Another dataset than last time: its widgets (the folder, the size...) mount afresh in the
    browser. When the run that hid them was cut short by the next click, Streamlit still holds their
    values as the browser's own and does not send them, so the browser would show the widget's
    default (an empty Folder) and send that back. Assigned here, they are sent."""
    if st.session_state.get(DRAWN_FOR) != dataset:
        for key in keys:
            if key in st.session_state:
                st.session_state[key] = st.session_state[key]
    st.session_state[DRAWN_FOR] = dataset


def _arrived() -> bool:
    """Whether the picker is drawn on another page than last time. Straight from a page with the
    picker, the browser sends that page's values as it saw them: a value set by a callback there
    (an uploaded dataset picked, an import) is missing, so the kept values are the truth then."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    context = get_script_run_ctx()
    page = context.page_script_hash if context else ""
    arrived, st.session_state["ds_page"] = st.session_state.get("ds_page") != page, page
    return arrived


def _propose(key: str, value) -> None:
    """Show `value` in widget `key` (drawn next) unless someone chose another value there: a folder's
    own image size follows the folder typed, while a person's choice or a Clone's stays."""
    proposed = st.session_state.setdefault("ds_proposed", {})
    if key not in st.session_state or st.session_state[key] == proposed.get(key):
        st.session_state[key] = value
    proposed[key] = value
