"""The managed datasets folder: where uploaded image-folder datasets live, their names, listing them
with their class counts, which runs train on one, and deleting a dataset, a class or single images.

The managed folder is `<runs folder>/.datasets/<name>/<class>/*` (TRAINBOARD_DATASETS moves it): it
lives with the only other thing Trainboard writes, and its dot keeps it out of the runs listing. Images
come in through core.data.imports. A deletion renames the dataset to a hidden trash name first, then
removes it: a deletion killed midway leaves only a hidden folder, which the next import or deletion
removes, as it does an hour-old stage a killed import left.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from core.data.folders import IMAGE_EXTENSIONS
from core.runs.layout import default_runs_dir

DATASETS_ENV = "TRAINBOARD_DATASETS"
DATASETS_FOLDER = ".datasets"        # inside the runs folder: a dot name is never read as a run
STAGE_PREFIX = ".import-"            # an import in progress (or left by a killed one) beside the datasets
STALE_STAGE_S = 3600                 # a stage this old belongs to no live import: removed
TRASH_PREFIX = ".deleting-"          # a dataset being deleted (or left by a killed deletion): removed
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "letters, digits, '-', '_' and '.', starting with a letter or digit, at most 64 characters"
CLASS_NAME_MAX = 64


class UploadRefused(ValueError):
    """The upload cannot be imported; the message says why. Nothing was written."""


class DatasetRefused(ValueError):
    """The dataset (or its class) cannot be deleted; the message says why. Nothing changed."""


@dataclass(frozen=True)
class ManagedDataset:
    name: str
    path: Path
    counts: dict[str, int]       # class -> images

    @property
    def images(self) -> int:
        return sum(self.counts.values())


# --- names and places --------------------------------------------------------------------------------
def datasets_dir(runs_root: str | os.PathLike | None = None) -> Path:
    """The managed data folder: $TRAINBOARD_DATASETS, else `.datasets` in the runs folder."""
    override = os.environ.get(DATASETS_ENV)
    base = Path(override) if override else Path(runs_root or default_runs_dir()) / DATASETS_FOLDER
    return base.expanduser().resolve()


def check_dataset_name(name: str) -> str:
    name = (name or "").strip()
    if not NAME_PATTERN.fullmatch(name):
        shown = f"{name!r}" if name else "an empty name"
        raise UploadRefused(f"dataset name {shown} cannot be used: use {NAME_RULE}")
    return name


def class_name_problem(name: str) -> str | None:
    """Why a class (a folder name) cannot be used, or None. Spaces and any alphabet are fine."""
    if not name:
        return "a class needs a name"
    if len(name) > CLASS_NAME_MAX:
        return f"class name {name[:20]!r}... is longer than {CLASS_NAME_MAX} characters"
    if name.startswith(".") or any(c in "/\\" or unicodedata.category(c)[0] == "C" for c in name):
        return f"class name {name!r} cannot be used: no '/', '\\', control characters or leading '.'"
    return None


def check_class_name(name: str) -> str:
    name = unicodedata.normalize("NFC", (name or "").strip())
    problem = class_name_problem(name)
    if problem:
        raise UploadRefused(problem)
    return name


def suggest_name(file_name: str) -> str:
    """A dataset name from an upload's file name: 'My Pets (2).zip' -> 'My-Pets-2'."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(file_name or "").stem).strip("-._")
    return stem[:64] or "images"


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def class_counts(path: Path) -> dict[str, int]:
    """Images per class folder of a dataset, counted from the listing (nothing decoded)."""
    counts = {}
    with os.scandir(path) as entries:
        classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    for name in classes:
        total = 0
        for _parent, dirs, files in os.walk(path / name):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            total += sum(1 for f in files if not f.startswith(".") and is_image_name(f))
        counts[name] = total
    return counts


def dataset_names(root: Path) -> list[str]:
    """The managed datasets' names, sorted; cheap enough for every rerun (one directory listing)."""
    try:
        with os.scandir(root) as entries:
            return sorted(e.name for e in entries if e.is_dir() and NAME_PATTERN.fullmatch(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def list_datasets(root: Path) -> list[ManagedDataset]:
    return [ManagedDataset(name, root / name, class_counts(root / name)) for name in dataset_names(root)]


def existing_dataset(root: Path, name: str) -> ManagedDataset:
    """The uploaded dataset called `name` in `root`. DatasetRefused for anything else: a path
    (`../x`, `/abs`), `.`, a hidden stage, a file, a link, or a name that is not there."""
    root = Path(root)
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise DatasetRefused(f"{name!r} is not the name of an uploaded dataset (names use {NAME_RULE}); "
                             "nothing was deleted")
    path = root / name
    if path.is_symlink() or not path.is_dir():
        names = dataset_names(root)
        raise DatasetRefused(f"there is no uploaded dataset named {name} in {root} ("
                             + (f"the uploaded ones: {', '.join(names)}" if names else "there are none")
                             + "); nothing was deleted")
    return ManagedDataset(name, path, class_counts(path))


def dataset_at(root: Path, folder: str | os.PathLike) -> str | None:
    """The name of the uploaded dataset in `root` whose folder `folder` is, or None."""
    if not str(folder).strip():
        return None
    folder = Path(folder).expanduser().resolve()
    return folder.name if folder.parent == Path(root).resolve() and folder.name in dataset_names(root) else None


def holds(dataset_path: Path, folder: str | os.PathLike) -> bool:
    """Whether `folder` (a run's or the picker's data path) is the dataset's folder or inside it."""
    if not str(folder).strip():
        return False
    folder = Path(folder).expanduser().resolve()
    dataset_path = Path(dataset_path).resolve()
    return folder == dataset_path or dataset_path in folder.parents


def runs_training_on(store, dataset_path: Path) -> list[str]:
    """The queued or running runs of `store` (a core.runs.store.RunStore) whose data is in `dataset_path`,
    by label. Only active runs' configs are read: cheap at 10,000 runs."""
    from core.config import FOLDER_DATASETS
    from core.runs.layout import RunNotFound
    from core.runs.states import ACTIVE_STATES
    from core.runs.status import UnreadableRun
    found = []
    for summary in store.list_runs():
        if summary.state not in ACTIVE_STATES or summary.dataset not in FOLDER_DATASETS:
            continue
        try:
            data_path = store.read_config(summary.run_id).data_path
        except (RunNotFound, UnreadableRun):
            continue
        if holds(dataset_path, data_path):
            found.append(f"{summary.label} ({summary.state})")
    return found


# --- deleting, through hidden trash ------------------------------------------------------------------
def delete_dataset(root: Path, name: str, store=None) -> ManagedDataset:
    """Delete uploaded dataset `name` and its images; returns what it held. DatasetRefused, with
    nothing changed, for a name that is no uploaded dataset, or one a queued or running run of
    `store` trains on."""
    root = Path(root)
    dataset = existing_dataset(root, name)
    _refuse_while_trained_on(dataset, store, "deleting it")
    _remove_through_trash(root, dataset.path, f"there is no uploaded dataset named {name} in {root} any more",
                          f"could not delete {name} in {root}")
    return dataset


def remove_class(root: Path, name: str, class_name: str, store=None) -> tuple[ManagedDataset, int]:
    """Delete class `class_name` (its folder and images) of uploaded dataset `name`; returns the
    dataset as it is now and the number of images removed. DatasetRefused, with nothing changed, for
    a class it does not have, its last class (delete the dataset instead), or a dataset a queued or
    running run of `store` trains on."""
    root = Path(root)
    dataset = removable_class(root, name, class_name)
    _refuse_while_trained_on(dataset, store, "removing a class")
    _remove_through_trash(root, dataset.path / class_name, f"{name} has no class {class_name!r} any more",
                          f"could not delete class {class_name} of {name}")
    return existing_dataset(root, name), dataset.counts[class_name]


def remove_images(root: Path, name: str, files: Iterable[str | os.PathLike], store=None) -> tuple[ManagedDataset, int]:
    """Delete image files of uploaded dataset `name` (a blurred photo, one in the wrong class); each
    is a path to an image file in one of its class folders, absolute or relative to the dataset's
    folder (`cat/3.png`). Returns the dataset as it is now and how many were deleted. DatasetRefused,
    with nothing changed, when any is not such a file, when a class would be left empty (delete the
    class instead), or while a queued or running run trains on the dataset."""
    root = Path(root)
    dataset = existing_dataset(root, name)
    folder = dataset.path.resolve()
    chosen: dict[Path, str] = {}
    for file in files:
        path = Path(file) if Path(file).is_absolute() else dataset.path / file
        resolved = path.resolve()
        parts = resolved.relative_to(folder).parts if resolved.is_relative_to(folder) else ()
        listed = len(parts) >= 2 and parts[0] in dataset.counts and not any(p.startswith(".") for p in parts)
        if not listed or path.is_symlink() or not resolved.is_file() or not is_image_name(resolved.name):
            raise DatasetRefused(f"{file} is not an image of {name}'s classes (a file in one of its class folders, "
                                 "e.g. cat/3.png); nothing was deleted")
        chosen[resolved] = parts[0]
    if not chosen:
        raise DatasetRefused("no images were chosen; nothing was deleted")
    for class_name, count in Counter(chosen.values()).items():
        if count >= dataset.counts[class_name]:
            raise DatasetRefused(f"that would leave class {class_name} of {name} without images: delete the class "
                                 "instead; nothing was deleted")
    _refuse_while_trained_on(dataset, store, "deleting images")
    trash = _new_trash(root)
    trash.mkdir()
    moved = []
    try:
        for path in chosen:          # a rename each takes the file out of its class at once
            target = trash / f"{len(moved)}{path.suffix}"
            os.rename(path, target)
            moved.append((target, path))
    except OSError as error:
        for target, path in moved:   # put back what moved: nothing half done
            os.rename(target, path)
        trash.rmdir()
        raise DatasetRefused(f"could not delete images of {name}: {error.strerror or error}; nothing was "
                             "deleted") from None
    shutil.rmtree(trash, ignore_errors=True)
    return existing_dataset(root, name), len(chosen)


def removable_class(root: Path, name: str, class_name: str) -> ManagedDataset:
    """Uploaded dataset `name`, which has class `class_name` and another; DatasetRefused otherwise."""
    dataset = existing_dataset(Path(root), name)
    if class_name not in dataset.counts:
        raise DatasetRefused(f"{name} has no class {class_name!r} (its classes: {', '.join(dataset.counts)}); "
                             "nothing was deleted")
    if len(dataset.counts) == 1:
        raise DatasetRefused(f"{class_name} is the only class of {name}: delete the dataset instead; "
                             "nothing was deleted")
    return dataset


def _refuse_while_trained_on(dataset: ManagedDataset, store, doing: str) -> None:
    busy = runs_training_on(store, dataset.path) if store is not None else []
    if busy:
        raise DatasetRefused(f"{dataset.name} is the data of {', '.join(busy)}: stop "
                             f"{'it' if len(busy) == 1 else 'them'} before {doing}; nothing was deleted")


def _new_trash(root: Path) -> Path:
    """A fresh hidden trash name in `root`, after removing what earlier deletions left there."""
    remove_leftovers(root)
    return root / f"{TRASH_PREFIX}{secrets.token_hex(6)}"


def _remove_through_trash(root: Path, path: Path, gone: str, failed: str) -> None:
    """One rename to a hidden trash name in `root` takes `path` out of every listing at once, then the
    trash is removed: a deletion killed midway leaves nothing half-visible (remove_leftovers ends it).
    `gone`, `failed`: the DatasetRefused messages when the rename finds nothing, or fails."""
    trash = _new_trash(root)
    try:
        os.rename(path, trash)
    except FileNotFoundError:            # deleted a moment ago by another tab or process
        raise DatasetRefused(gone) from None
    except OSError as error:
        raise DatasetRefused(f"{failed}: {error.strerror or error}; nothing was deleted") from None
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(root: Path) -> None:
    """Stages left by a killed import and trash left by a killed deletion: hidden, so never listed,
    but they hold disk space. A stage may be a live import's, so only an old one goes; trash is
    never anyone's to keep (a deletion running now removes it too: both ignore what is gone)."""
    cutoff = time.time() - STALE_STAGE_S
    with os.scandir(root) as entries:
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name.startswith(TRASH_PREFIX) or (entry.name.startswith(STAGE_PREFIX)
                                                       and entry.stat().st_mtime < cutoff):
                shutil.rmtree(entry.path, ignore_errors=True)
