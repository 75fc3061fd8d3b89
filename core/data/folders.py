"""Image folders and CSV-labelled folders: which files are the samples, which are left out and why,
hints for layouts that are almost right, and the size and channels the images have on disk.

Listing never decodes an image (the Datasets page and the launch check list a 60,000-image folder
in about the time it takes to read the directory); the native size is read from file headers only.
"""
from __future__ import annotations

import csv
import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from core.config import DATASET_DEFAULTS, DATASET_LABELS, FOLDER_DATASETS, SETTINGS, RunConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing"}
MISSING_NAMED = 5              # a CSV naming missing files: this many are listed
NATIVE_SAMPLE = 64             # files whose headers decide the proposed size and channels
NOT_AN_IMAGE = f"not an image file (only {', '.join(IMAGE_EXTENSIONS)} are read)"
OUTSIDE_CLASSES = "outside the class folders"
EMPTY_CLASS = "empty class folder: no image files in it"


class DatasetError(ValueError):
    """The data cannot be used; the message says why and what to do."""


class Refusal(NamedTuple):
    """A file left out, and why (a module-level class: DataLoader workers pickle it)."""
    path: str
    reason: str


@dataclass
class FolderListing:
    classes: list[str]
    files: list[str]
    labels: list[int]
    left_out: list[Refusal] = field(default_factory=list)   # stray, non-image files, empty class folders


def _label(name: str) -> str:
    """A setting as the form names it, e.g. 'Folder': messages speak the form's language."""
    return SETTINGS[name].label


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _visible(names) -> list[str]:
    return sorted(name for name in names if not name.startswith("."))


def _image_files_under(folder: str) -> tuple[list[str], list[str]]:
    """(image files, other files) anywhere under `folder`, hidden ones ignored, sorted."""
    images, others = [], []
    for parent, dirs, names in os.walk(folder):
        dirs[:] = _visible(dirs)
        for name in _visible(names):
            (images if _is_image(name) else others).append(os.path.join(parent, name))
    return sorted(images), sorted(others)


def _class_folders(root: Path) -> FolderListing:
    listing = FolderListing([], [], [])
    with os.scandir(root) as entries:
        children = sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    for child in children:
        if not child.is_dir():
            listing.left_out.append(Refusal(child.path, NOT_AN_IMAGE if not _is_image(child.name)
                                            else OUTSIDE_CLASSES))
            continue
        images, others = _image_files_under(child.path)
        listing.left_out += [Refusal(path, NOT_AN_IMAGE) for path in others]
        if not images:
            listing.left_out.append(Refusal(child.path, EMPTY_CLASS))
            continue
        listing.files += images
        listing.labels += [len(listing.classes)] * len(images)
        listing.classes.append(child.name)
    return listing


def _csv_rows(labels_csv: Path) -> list[list[str]]:
    try:
        with open(labels_csv, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"{_label('labels_csv')} {labels_csv} is not a UTF-8 CSV ({error})") from None
    if rows and [c.strip().lower() for c in rows[0][:2]] == ["filename", "label"]:
        rows = rows[1:]
    bad = [i for i, row in enumerate(rows) if len(row) < 2]
    if bad:
        raise DatasetError(f"{labels_csv}: rows need two columns filename,label (row {bad[0] + 2} has "
                           f"{len(rows[bad[0]])})")
    return rows


def _csv_hint(root: Path, labels_csv: Path, missing: str) -> str:
    """Where the files a CSV names might be relative to, when not to the folder."""
    if labels_csv.parent.resolve() != root.resolve() and (labels_csv.parent / missing).is_file():
        return f" They are beside the CSV: set {_label('data_path')} to {labels_csv.parent}."
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir() and (Path(entry.path) / missing).is_file():
                return f" {Path(entry.path) / missing} exists: set {_label('data_path')} to {entry.path}."
    return f" Filenames are read relative to {_label('data_path')}."


def _csv_listing(root: Path, labels_csv: Path) -> FolderListing:
    rows = _csv_rows(labels_csv)
    names = [row[1].strip() for row in rows]
    classes = sorted(set(names), key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    index = {name: i for i, name in enumerate(classes)}
    root_resolved = root.resolve()
    files, missing = [], []
    for row in rows:
        path = (root / row[0].strip()).resolve()
        if root_resolved not in path.parents:
            raise DatasetError(f"{labels_csv}: {row[0]!r} points outside {root}")
        if not path.is_file():
            missing.append(row[0].strip())
        files.append(str(path))
    if missing:
        shown = ", ".join(missing[:MISSING_NAMED]) + (", ..." if len(missing) > MISSING_NAMED else "")
        raise DatasetError(f"{_label('labels_csv')} {labels_csv} names {len(missing):,} file"
                           f"{'s' if len(missing) != 1 else ''} (of {len(rows):,}) that are not in "
                           f"{_label('data_path')} {root}: {shown}." + _csv_hint(root, labels_csv, missing[0]))
    return FolderListing(classes, files, [index[name] for name in names])


def _holds_images(folder: str) -> bool:
    for _parent, dirs, names in os.walk(folder):
        dirs[:] = _visible(dirs)
        if any(_is_image(name) for name in names if not name.startswith(".")):
            return True
    return False


def _subfolders_with_images(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        dirs = sorted(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
    return [d for d in dirs if _holds_images(d)]


def layout_problem(root: Path) -> str | None:
    """A folder whose classes sit one level deeper than expected (one wrapping folder, or train/
    and test/ splits each holding class folders): what to set Folder to instead."""
    with os.scandir(root) as entries:
        dirs = sorted((Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")),
                      key=lambda p: p.name)
    folder = _label("data_path")
    if len(dirs) == 1 and len(classes := _subfolders_with_images(dirs[0])) >= 2:
        names = ", ".join(Path(c).name for c in classes[:5]) + (", ..." if len(classes) > 5 else "")
        return (f"{folder} {root} is one level too deep: it holds only {dirs[0].name}/, whose folders "
                f"({names}) look like classes. Set {folder} to {dirs[0]}.")
    splits = [d for d in dirs if d.name.lower() in SPLIT_FOLDER_NAMES and _subfolders_with_images(d)]
    if splits:
        train = next((d for d in splits if d.name.lower() in ("train", "training")), splits[0])
        return (f"{folder} {root} holds split folders ({', '.join(d.name for d in splits)}), each with class "
                f"folders inside. Set {folder} to {train}: Trainboard makes its own validation and test "
                f"splits ({_label('val_fraction')}, {_label('test_fraction')}).")
    return None


def _no_images_message(root: Path, dataset: str) -> str:
    if dataset == "csv-folder":
        return f"{_label('data_path')} {root}: the labels CSV names no images"
    with os.scandir(root) as entries:
        loose = sum(1 for e in entries if e.is_file() and _is_image(e.name))
    message = f"{_label('data_path')} {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders"
    if loose:
        message += (f"; it holds {loose:,} image{'s' if loose != 1 else ''} directly. Put each class's images "
                    f"in a folder of its own ({root}/<class>/...), or pick {DATASET_LABELS['csv-folder']!r} "
                    "with a CSV of labels")
    return message


def _labels_csv_path(root: Path, labels_csv: str) -> Path:
    return Path(labels_csv).expanduser() if labels_csv else root / "labels.csv"


def list_folder(config) -> FolderListing:
    """The samples of an image-folder or csv-folder config; DatasetError says what is wrong and,
    for a layout that is almost right, what to set instead."""
    root = Path(config.data_path).expanduser()
    folder = _label("data_path")
    if not root.exists():
        raise DatasetError(f"{folder} {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{folder} {root} is a file; it must be a folder of images")
    if config.dataset == "csv-folder":
        labels_csv = _labels_csv_path(root, config.labels_csv)
        if not labels_csv.is_file():
            raise DatasetError(f"{_label('labels_csv')} {labels_csv} not found: a "
                               f"{DATASET_LABELS['csv-folder']} needs a filename,label CSV")
        listing = _csv_listing(root, labels_csv)
    else:
        problem = layout_problem(root)
        if problem:
            raise DatasetError(problem)
        listing = _class_folders(root)
    if not listing.files:
        raise DatasetError(_no_images_message(root, config.dataset))
    if len(listing.classes) < 2:
        raise DatasetError(f"{folder} {root} has a single class ({listing.classes[0]}); a classifier needs at "
                           f"least two: add a folder for each other class beside {root / listing.classes[0]}")
    return listing


# --- the images' own size and channels ----------------------------------------------------------
@dataclass(frozen=True)
class NativeShape:
    width: int
    height: int
    channels: int           # 1 grayscale, 3 colour
    sampled: int            # headers read
    share: float            # of those, how many have this size and channels

    def describe(self) -> str:
        kind = SETTINGS["channels"].choice_labels[self.channels]
        return (f"{self.share:.0%} of {self.sampled} sampled images are {self.width}x{self.height} {kind}")


def _sample_files(dataset: str, root: Path, labels_csv: str, limit: int) -> list[str]:
    """A few image files of a folder, taken from each class without listing the whole folder."""
    if dataset == "csv-folder":
        return [str(root / row[0].strip()) for row in _csv_rows(_labels_csv_path(root, labels_csv))[:limit]]
    with os.scandir(root) as entries:
        class_dirs = sorted(e.path for e in entries if e.is_dir() and not e.name.startswith("."))
    files = []
    for class_dir in class_dirs:
        with os.scandir(class_dir) as entries:
            names = sorted(e.name for e in entries if e.is_file() and _is_image(e.name))
        files += [os.path.join(class_dir, name) for name in names[:max(1, limit // len(class_dirs))]]
    return files[:limit]


def _header_shape(path: str) -> tuple[int, int, int] | None:
    from PIL import Image
    try:
        with Image.open(path) as image:     # lazy: reads the header, not the pixels
            width, height = image.size
            return width, height, 1 if image.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    except Exception:       # unreadable files are named when the folder is listed, not here
        return None


@functools.lru_cache(maxsize=16)
def _native_shape(dataset: str, root: Path, labels_csv: str, _changed: int) -> NativeShape | None:
    shapes = [s for s in map(_header_shape, _sample_files(dataset, root, labels_csv, NATIVE_SAMPLE)) if s]
    if not shapes:
        return None
    (width, height, channels), count = Counter(shapes).most_common(1)[0]
    return NativeShape(width, height, channels, len(shapes), count / len(shapes))


def native_shape(dataset: str, data_path: str, labels_csv: str = "") -> NativeShape | None:
    """The most common size and channels among a sample of a folder's images (headers only); None
    when the folder cannot tell (missing, empty, unreadable)."""
    if not data_path:
        return None
    try:
        root = Path(data_path).expanduser()
        # Cached while the folder is unchanged: the dataset picker asks on every rerun.
        return _native_shape(dataset, root, labels_csv, root.stat().st_mtime_ns)
    except (OSError, ValueError, DatasetError):
        return None


def proposed_shape(dataset: str, data_path: str, labels_csv: str = "") -> dict:
    """image_size and channels to start from for a folder: its images' own, so a folder of 28x28
    grayscale images is not blown up to 64x64 RGB. Larger images are proposed at the dataset's
    default size, which trains in minutes on a CPU; {} when the folder cannot tell."""
    shape = native_shape(dataset, data_path, labels_csv)
    if shape is None:
        return {}
    side = max(shape.width, shape.height)
    default = DATASET_DEFAULTS[dataset]["image_size"]
    return {"image_size": max(int(SETTINGS["image_size"].low), min(side, default)), "channels": shape.channels}


def proposed_config(dataset: str, **overrides) -> RunConfig:
    """RunConfig.for_dataset, with a folder's own image size and channels (proposed_shape, read from
    a few file headers) when `dataset` is a folder and data_path names it."""
    data_path = overrides.get("data_path")
    shape = proposed_shape(dataset, data_path, overrides.get("labels_csv", "")) \
        if dataset in FOLDER_DATASETS and data_path else None
    return RunConfig.for_dataset(dataset, shape=shape, **overrides)
