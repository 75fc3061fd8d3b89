"""Bringing images into the managed datasets folder: a zip of class folders imported safely, or images
added to a named class (Teachable Machine's "add a class, drop images").

Every file goes through core.data.images (the one decoding boundary) before it is kept; refused files are
named with the decoder's reason. An import writes into a hidden folder beside the dataset and renames it
in at the end, so a failed import leaves nothing behind, and a zip is judged from its directory (paths,
links, sizes, compression ratios) before a byte of it is decompressed.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import tempfile
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable

from core.data.folders import Refusal
from core.data.images import MAX_FILE_BYTES, ImageRefused, decode, preview
from core.data.uploads import (
    STAGE_PREFIX,
    UploadRefused,
    check_class_name,
    check_dataset_name,
    class_counts,
    class_name_problem,
    is_image_name,
    remove_leftovers,
)

# A zip is refused before anything is decompressed when its directory says it is hostile or too big.
MAX_ZIP_ENTRIES = 100_000            # files and folders listed in the zip
MAX_ZIP_TOTAL_BYTES = 4 * 1024**3    # uncompressed, all entries together, as the zip declares them
MAX_COMPRESSION_RATIO = 100          # images barely compress; a bomb compresses 1000x and more
RATIO_CHECKED_ABOVE = 1024**2        # small entries may compress well (a flat BMP); their total is capped
CHECK_SIZE = 32                      # the size images are decoded at to be judged (the decoder's check)
SYSTEM_FILES = {"thumbs.db", "desktop.ini", "__macosx"}   # made by file managers, not by people
CONVERTED_SUFFIX = ".png"            # readable images in other formats (GIF, TIFF, ...) are kept as PNG
FILE_STEM_MAX = 80                   # a kept file's name is cut to this many characters before its extension


@dataclass
class ImportResult:
    name: str
    path: Path
    created: bool                                     # a new dataset, not an addition to one
    added: dict[str, int]                             # class -> images added by this import
    counts: dict[str, int]                            # class -> images in the dataset now
    refused: list[Refusal] = field(default_factory=list)
    ignored: int = 0                                  # hidden and system files (__MACOSX, .DS_Store)

    @property
    def added_total(self) -> int:
        return sum(self.added.values())

    def describe(self) -> str:
        verb = "Imported" if self.created else "Added"
        classes = len(self.counts)
        text = (f"{verb} {self.added_total:,} image{'s' if self.added_total != 1 else ''} "
                f"{'into' if self.created else 'to'} {self.name}, which now has {classes} "
                f"class{'es' if classes != 1 else ''} and {sum(self.counts.values()):,} images.")
        if self.refused:
            text += f" {len(self.refused)} file{'s were' if len(self.refused) != 1 else ' was'} not imported."
        if self.ignored:
            text += f" {self.ignored} hidden or system file{'s' if self.ignored != 1 else ''} ignored."
        if classes < 2:
            text += " A classifier needs at least two classes: add another."
        return text


# --- deciding what is kept ---------------------------------------------------------------------------
def _safe_file_name(name: str) -> str:
    stem, ext = os.path.splitext(unicodedata.normalize("NFC", name))
    stem = re.sub(r"[^\w\-. ()]+", "_", stem).strip(" .")[:FILE_STEM_MAX] or "image"
    return stem + ext.lower()


def _checked_image(file_name: str, data: bytes) -> tuple[str, bytes]:
    """(the name to keep it under, its bytes), or ImageRefused with the decoder's reason. Files the
    folder datasets read are kept byte for byte; other readable images (GIF, TIFF, ...) become PNG."""
    name = _safe_file_name(file_name)
    if is_image_name(name):
        decode(data, CHECK_SIZE, 3)
        return name, data
    from PIL import Image
    pixels = preview(data, 1 << 16)           # the whole image (no side is that long), as RGB
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return os.path.splitext(name)[0] + CONVERTED_SUFFIX, buffer.getvalue()


class _Stage:
    """A hidden folder beside the datasets where an import is written before it is renamed in."""

    def __init__(self, root: Path, name: str):
        root.mkdir(parents=True, exist_ok=True)
        remove_leftovers(root)
        self.path = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{name}-", dir=root))
        self.used: dict[str, set[str]] = {}          # class -> names taken (lower case)
        self.added: dict[str, int] = {}

    def write(self, class_name: str, file_name: str, data: bytes) -> None:
        taken = self.used.setdefault(class_name, set())
        folder = self.path / class_name
        if not taken:
            folder.mkdir(exist_ok=True)
        name = _unique_name(file_name, lambda n: n.lower() in taken)
        taken.add(name.lower())
        with open(folder / name, "xb") as handle:
            handle.write(data)
        self.added[class_name] = self.added.get(class_name, 0) + 1

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def _staging(root: Path, name: str):
    """A _Stage for one import, removed afterwards (renamed in by then when the import succeeded); a
    write error becomes UploadRefused in plain words."""
    stage = None
    try:
        stage = _Stage(root, name)
        yield stage
    except OSError as error:
        raise UploadRefused(f"could not write in {root}: {error.strerror or error}; nothing was imported") from None
    finally:
        if stage is not None:
            stage.remove()


def _unique_name(name: str, taken) -> str:
    stem, ext = os.path.splitext(name)
    candidate, n = name, 1
    while taken(candidate):
        n += 1
        candidate = f"{stem}-{n}{ext}"
    return candidate


def _commit(stage: _Stage, root: Path, name: str, add: bool) -> bool:
    """Put the staged images in place; True when the dataset is new. A new dataset is one rename;
    an addition links each file in (never over an existing one) and takes them all back on failure."""
    target = root / name
    if not target.exists():
        os.chmod(stage.path, 0o755)        # mkdtemp makes 0700; a dataset is meant to be shared
        try:
            os.rename(stage.path, target)
        except OSError:
            if not target.exists():
                raise
            # another import created it a moment ago: add to it if allowed, else refused below
        else:
            return True
    if not add:
        raise UploadRefused(f"a dataset named {name} exists already: pick another name, or choose to add "
                            "the images to it")
    placed, made = [], []
    try:
        for class_dir in sorted(p for p in stage.path.iterdir() if p.is_dir()):
            destination = target / class_dir.name
            if not destination.exists():
                destination.mkdir()
                made.append(destination)
            for source in sorted(class_dir.iterdir()):
                placed.append(_place(source, destination))
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return False


def _place(source: Path, destination: Path) -> Path:
    """Move a staged file into a class folder under a name not taken there, never over a file."""
    while True:
        final = destination / _unique_name(source.name, lambda n: (destination / n).exists())
        try:
            os.link(source, final)       # fails rather than replace a file that appeared meanwhile
            return final
        except FileExistsError:
            continue
        except OSError:                  # a file system without hard links
            if final.exists():
                continue
            os.rename(source, final)
            return final


def _finish(stage: _Stage, root: Path, name: str, add: bool, refused: list[Refusal],
            ignored: int, seen: int) -> ImportResult:
    if not stage.added:
        detail = (f": {refused[0].path}: {refused[0].reason}" if len(refused) == 1 else
                  f" ({len(refused)} files refused, e.g. {refused[0].path}: {refused[0].reason})" if refused
                  else "")
        raise UploadRefused(f"no image could be read{detail}; nothing was imported" if seen
                            else "there are no files to import")
    try:
        created = _commit(stage, root, name, add)
    except OSError as error:
        raise UploadRefused(f"could not write the dataset {name} in {root}: {error.strerror or error}; "
                            "nothing was imported") from None
    return ImportResult(name, root / name, created, dict(sorted(stage.added.items())),
                        class_counts(root / name), refused, ignored)


def _prepare(root: Path, name: str, add: bool) -> tuple[Path, str]:
    root = Path(root)
    name = check_dataset_name(name)
    if (root / name).exists() and not add:
        raise UploadRefused(f"a dataset named {name} exists already: pick another name, or choose to add "
                            "the images to it")
    if (root / name).exists() and not (root / name).is_dir():
        raise UploadRefused(f"{root / name} is a file, not a dataset folder")
    return root, name


# --- a zip of class folders --------------------------------------------------------------------------
def _hidden_or_system(parts: list[str]) -> bool:
    return any(p.startswith(".") or p.lower() in SYSTEM_FILES for p in parts)


def _zip_plan(archive: zipfile.ZipFile) -> tuple[list[tuple[zipfile.ZipInfo, list[str]]], int]:
    """The zip's files to consider as (entry, path parts), and how many were ignored. Refuses the
    whole zip, before decompressing anything, for what only a crafted or damaged zip holds."""
    infos = archive.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise UploadRefused(f"the zip lists {len(infos):,} entries; at most {MAX_ZIP_ENTRIES:,} are imported")
    declared = sum(info.file_size for info in infos)
    if declared > MAX_ZIP_TOTAL_BYTES:
        raise UploadRefused(f"the zip would unpack to {declared / 1024**3:,.1f} GiB; at most "
                            f"{MAX_ZIP_TOTAL_BYTES / 1024**3:,.0f} GiB are imported")
    files, ignored = [], 0
    for info in infos:
        raw = info.filename
        name = raw.replace("\\", "/")
        if name.startswith("/") or re.match(r"[A-Za-z]:", name):
            raise UploadRefused(f"the zip holds an absolute path ({raw}); nothing was imported")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UploadRefused(f"the zip holds a path that leads outside its folder ({raw}); nothing was imported")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UploadRefused(f"the zip holds a symbolic link ({raw}); links are not imported: zip the files "
                                "themselves")
        if info.is_dir() or not parts:
            continue
        if info.flag_bits & 0x1:
            raise UploadRefused(f"the zip is password-protected ({raw}); zip the images without a password")
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > RATIO_CHECKED_ABOVE and ratio > MAX_COMPRESSION_RATIO:
            raise UploadRefused(f"the zip looks like a zip bomb: {raw} unpacks {ratio:,.0f} times larger than it "
                                f"is stored (images compress less than {MAX_COMPRESSION_RATIO}x); nothing was imported")
        if _hidden_or_system(parts):
            ignored += 1
            continue
        files.append((info, parts))
    # A zip of one folder holding the classes ("pets/cat/1.png", as Finder and Explorer zip a folder):
    # look inside that folder, as long as what is inside still has folders of its own.
    while files and len({parts[0] for _, parts in files}) == 1 and any(len(parts) > 2 for _, parts in files):
        files = [(info, parts[1:]) for info, parts in files]
    return files, ignored


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_FILE_BYTES:
        raise ImageRefused(f"file too large (limit {MAX_FILE_BYTES // 1024**2} MiB)")
    try:
        with archive.open(info) as member:
            return member.read(MAX_FILE_BYTES + 1)      # never more than the entry declares
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as error:
        raise ImageRefused(f"damaged in the zip ({error})") from None


def _disk_space_check(root: Path, needed: int) -> None:
    existing = root
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return
    if needed > free:
        raise UploadRefused(f"not enough disk space: {needed / 1024**2:,.0f} MB needed, "
                            f"{free / 1024**2:,.0f} MB free in {root}")


def import_zip(source: str | os.PathLike | IO[bytes], root: Path, name: str, add: bool = False) -> ImportResult:
    """Import a zip of class folders (`<class>/<image>`, or one folder holding them) as dataset
    `name` in `root`; with add=True into an existing one too. UploadRefused when nothing can be
    imported; then nothing was written."""
    root, name = _prepare(root, name, add)
    try:
        archive = zipfile.ZipFile(source)
    except FileNotFoundError:
        raise UploadRefused(f"{source} does not exist") from None
    except IsADirectoryError:
        raise UploadRefused(f"{source} is a folder; a zip file is expected") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        shown = getattr(source, "name", source)
        raise UploadRefused(f"{shown} is not a zip file we can read ({error})") from None
    with archive:
        plan, ignored = _zip_plan(archive)
        _disk_space_check(root, sum(info.file_size for info, _ in plan))
        refused = []
        with _staging(root, name) as stage:
            for info, parts in plan:
                if len(parts) == 1:
                    refused.append(Refusal(info.filename, "outside the class folders: put each class's images "
                                                          "in a folder of its own"))
                    continue
                problem = class_name_problem(unicodedata.normalize("NFC", parts[0]))
                if problem:
                    refused.append(Refusal(info.filename, problem))
                    continue
                try:
                    kept_name, data = _checked_image(parts[-1], _read_member(archive, info))
                except ImageRefused as error:
                    refused.append(Refusal(info.filename, str(error)))
                    continue
                stage.write(unicodedata.normalize("NFC", parts[0]), kept_name, data)
            return _finish(stage, root, name, add, refused, ignored, seen=len(plan))


# --- images dropped for one class --------------------------------------------------------------------
def add_images(root: Path, name: str, class_name: str, files: Iterable[tuple[str, bytes]]) -> ImportResult:
    """Add images (file name, bytes) to class `class_name` of dataset `name`, creating either when
    new. UploadRefused when none can be used; then nothing was written."""
    root, name = _prepare(root, name, add=True)
    class_name = check_class_name(class_name)
    files = list(files)
    if len(files) > MAX_ZIP_ENTRIES:
        raise UploadRefused(f"{len(files):,} files at once; at most {MAX_ZIP_ENTRIES:,} are added")
    _disk_space_check(root, sum(len(data) for _, data in files))
    refused, ignored = [], 0
    with _staging(root, name) as stage:
        for file_name, data in files:
            base = os.path.basename(str(file_name).replace("\\", "/"))
            if _hidden_or_system([base]):
                ignored += 1
                continue
            try:
                kept_name, kept = _checked_image(base, data)
            except ImageRefused as error:
                refused.append(Refusal(base or "(no name)", str(error)))
                continue
            stage.write(class_name, kept_name, kept)
        return _finish(stage, root, name, True, refused, ignored, seen=len(files))
