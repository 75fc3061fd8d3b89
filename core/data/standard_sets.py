"""MNIST, Fashion-MNIST and CIFAR-10 read from their original files, in the folder a person names.

Nothing is downloaded and nothing is written: IDX files are read gzipped or not (told by their
first bytes, not their names), CIFAR-10's python batches loose or from inside
cifar-10-python.tar.gz, so a read-only folder such as Debian's /usr/share/datasets works and a
data folder never gains empty sub-folders. Files are checked by their headers and sizes (not by
checksums of a download), and every message names the files looked for and the folders looked in.
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import DATASET_LABELS, SETTINGS
from core.data.folders import DatasetError

IDX_FILES = {"train images": "train-images-idx3-ubyte", "train labels": "train-labels-idx1-ubyte",
             "test images": "t10k-images-idx3-ubyte", "test labels": "t10k-labels-idx1-ubyte"}
IDX_UBYTE = 0x08                       # the IDX type code of unsigned bytes
CIFAR_FOLDER, CIFAR_ARCHIVE = "cifar-10-batches-py", "cifar-10-python.tar.gz"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = "test_batch"
CIFAR_SIDE = 32
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class StandardSet:
    classes: tuple[str, ...]
    layout: str                         # "idx" or "cifar"
    subfolders: tuple[str, ...]         # looked in after the folder itself (torchvision's layouts)
    where_to_get: str = ""


STANDARD_SETS = {
    "mnist": StandardSet(("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                          "7 - seven", "8 - eight", "9 - nine"), "idx", ("MNIST/raw", "MNIST"),
                         "They are published at https://yann.lecun.com/exdb/mnist/ (or any mirror)."),
    "fashion-mnist": StandardSet(("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot"), "idx", ("FashionMNIST/raw", "FashionMNIST"),
                                 "Debian's dataset-fashion-mnist package installs them in "
                                 "/usr/share/datasets/fashion-mnist; they are also published at "
                                 "https://github.com/zalandoresearch/fashion-mnist."),
    "cifar10": StandardSet(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"), "cifar", (CIFAR_FOLDER,),
                           "cifar-10-python.tar.gz is published at https://www.cs.toronto.edu/~kriz/cifar.html."),
}


@dataclass(frozen=True)
class Described:
    """What the files hold, learnt without reading the images: enough to check a config."""
    train_labels: np.ndarray
    test_labels: np.ndarray
    image_shape: tuple[int, int, int]       # C, H, W


def data_root(data_path: str) -> Path:
    """The folder a standard set is read from: the Folder setting, else $TRAINBOARD_DATA, else ./data."""
    return Path(data_path or os.environ.get("TRAINBOARD_DATA", "data")).expanduser()


def _folders_looked_in(dataset: str, root: Path) -> list[Path]:
    return [root] + [root / sub for sub in STANDARD_SETS[dataset].subfolders]


def _first_file(dataset: str) -> tuple[str, ...]:
    """Names that show a folder holds the set (for the hint about a folder one level up)."""
    if STANDARD_SETS[dataset].layout == "idx":
        return (IDX_FILES["train images"], IDX_FILES["train images"] + ".gz")
    return (CIFAR_ARCHIVE, f"{CIFAR_FOLDER}/{CIFAR_TRAIN[0]}", CIFAR_TRAIN[0])


def _not_found(dataset: str, root: Path, wanted: str) -> DatasetError:
    spec, folder = STANDARD_SETS[dataset], SETTINGS["data_path"].label
    root = root.absolute()       # "data" alone does not say where that is for the server
    where = ", ".join(str(p) for p in _folders_looked_in(dataset, root))
    missing_root = "" if root.is_dir() else f" ({root} does not exist)"
    message = f"{DATASET_LABELS[dataset]}'s files were not found. Looked for {wanted} in {where}{missing_root}."
    below = [] if not root.is_dir() else sorted(
        child for child in root.iterdir()
        if child.is_dir() and any((child / n).is_file() for n in _first_file(dataset)))
    if below:
        return DatasetError(f"{message} {below[0]} seems to hold them: set {folder} to it.")
    return DatasetError(f"{message} Put them in {root}, or set {folder} to the folder that holds them. "
                        f"{spec.where_to_get}".rstrip())


# --- IDX (MNIST, Fashion-MNIST) ------------------------------------------------------------------
def _idx_paths(dataset: str, root: Path) -> dict[str, Path]:
    """The four IDX files (each plain or .gz), all from the first folder that holds any of them."""
    wanted = " and ".join((", ".join(IDX_FILES.values())).rsplit(", ", 1)) + " (each may end in .gz)"
    for folder in _folders_looked_in(dataset, root):
        found = {}
        for role, name in IDX_FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[role] = candidate
                    break
        if len(found) == len(IDX_FILES):
            return found
        if found:
            missing = [f"{name}[.gz]" for role, name in IDX_FILES.items() if role not in found]
            raise DatasetError(f"{DATASET_LABELS[dataset]} in {folder}: {', '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} missing (found "
                               f"{', '.join(p.name for p in found.values())}). Put the missing file there.")
    raise _not_found(dataset, root, wanted)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def _open_idx(path: Path):
    """The file's bytes as a stream, decompressed when it is gzip whatever its name says."""
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _gzip_stored_size(path: Path) -> int:
    """The uncompressed size a gzip file records in its last 4 bytes (modulo 2**32)."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def _idx_header(path: Path, role: str, stream) -> tuple[int, ...]:
    """The dimensions an IDX file's header declares; DatasetError unless it is the IDX file expected."""
    ndim = 3 if role.endswith("images") else 1
    try:
        magic = stream.read(4)
        dims = stream.read(4 * ndim)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path}: cannot be read as gzip ({error}); it is damaged") from None
    expected = bytes([0, 0, IDX_UBYTE, ndim])
    if magic != expected:
        what = f"its magic number is 0x{magic.hex()}" if len(magic) == 4 else f"it holds {len(magic)} bytes"
        raise DatasetError(f"{path} is not an IDX {role} file: {what}, expected 0x{expected.hex()} "
                           f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})")
    if len(dims) != 4 * ndim:
        raise DatasetError(f"{path} is truncated: its header ends after {4 + len(dims)} bytes")
    return tuple(int.from_bytes(dims[i:i + 4], "big") for i in range(0, len(dims), 4))


def _check_idx_size(path: Path, role: str, dims: tuple[int, ...]) -> None:
    """Truncated or padded files are found from the size, before anything is decoded."""
    header, expected = 4 + 4 * len(dims), int(np.prod(dims))
    shape = "x".join(map(str, dims[1:]))
    promise = f"its header promises {dims[0]:,} {role}" + (f" of {shape}" if shape else "") + f" ({expected:,} bytes)"
    if _is_gzip(path):
        # The trailer records the uncompressed size modulo 2**32; a cut-off file ends in other bytes.
        if (_gzip_stored_size(path) - header - expected) % 2**32:
            raise DatasetError(f"{path} is truncated or damaged: {promise}, but its gzip trailer does not "
                               "record that much")
    elif path.stat().st_size - header != expected:
        raise DatasetError(f"{path} is truncated or damaged: {promise}, but it holds "
                           f"{max(path.stat().st_size - header, 0):,}")


def _read_idx(path: Path, role: str, header_only: bool) -> tuple[tuple[int, ...], np.ndarray | None]:
    with _open_idx(path) as stream:
        dims = _idx_header(path, role, stream)
        _check_idx_size(path, role, dims)
        if header_only:
            return dims, None
        values = bytearray(int(np.prod(dims)))
        try:
            filled = stream.readinto(values)
            while filled < len(values) and (more := stream.readinto(memoryview(values)[filled:])):
                filled += more
        except (OSError, EOFError, zlib.error) as error:
            raise DatasetError(f"{path} is damaged: {error}") from None
    if filled != len(values):
        raise DatasetError(f"{path} is truncated: {filled:,} of {len(values):,} bytes")
    return dims, np.frombuffer(values, dtype=np.uint8).reshape(dims)


def _check_labels(path: Path, labels: np.ndarray, classes: int, images_path: Path, images: int) -> None:
    if len(labels) != images:
        raise DatasetError(f"{path} holds {len(labels):,} labels but {images_path} holds {images:,} images")
    if len(labels) and labels.max() >= classes:
        raise DatasetError(f"{path} holds label {int(labels.max())}; {classes} classes are 0-{classes - 1}")


def _idx_set(dataset: str, paths: dict[str, Path], with_images: bool):
    """{split: (images or None, labels)} and the image shape."""
    out, shape = {}, None
    for split in ("train", "test"):
        image_path, label_path = paths[f"{split} images"], paths[f"{split} labels"]
        dims, images = _read_idx(image_path, f"{split} images", header_only=not with_images)
        _, labels = _read_idx(label_path, f"{split} labels", header_only=False)
        _check_labels(label_path, labels, len(STANDARD_SETS[dataset].classes), image_path, dims[0])
        if shape is not None and dims[1:] != shape[1:]:
            raise DatasetError(f"{image_path} holds {dims[1]}x{dims[2]} images, the training files "
                               f"{shape[1]}x{shape[2]}")
        shape = (1, *dims[1:])
        out[split] = (None if images is None else images[:, None], labels.astype(np.int64))
    return out, shape


# --- CIFAR-10 python batches -----------------------------------------------------------------------
def _numpy_function(module_suffix: str, name: str):
    for prefix in ("numpy._core.", "numpy.core."):      # NumPy 2 moved numpy.core to numpy._core
        try:
            module = __import__(prefix + module_suffix, fromlist=[name])
            return getattr(module, name)
        except (ImportError, AttributeError):
            continue
    return None


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's batches are pickles, and a pickle can name any function to call. These files are
    data someone put in a folder, so only what a batch is made of may be named: NumPy's array
    rebuilders, ndarray, dtype and codecs' encode (how Python 3 pickles bytes for Python 2). Dicts,
    lists, bytes, str and ints need no name. Anything else is refused before it runs."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
               ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            found = _numpy_function(*self.ALLOWED[module, name])
            if found is not None:
                return found
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs
            return codecs.encode
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never does")


def _cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 3, 32, 32] uint8, labels) of one batch's pickle."""
    try:
        # latin1: the original batches were written by Python 2, whose str holds the pixels.
        batch = _CifarUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:      # a damaged pickle raises nearly any type
        raise DatasetError(f"{where} is not a CIFAR-10 python batch: {error}") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{where} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}")
    pixels = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    side = CIFAR_SIDE
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 2 \
            or pixels.shape[1] != 3 * side * side:
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise DatasetError(f"{where}: 'data' must be uint8 rows of {3 * side * side} values, got {got}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(pixels):
        raise DatasetError(f"{where}: 'labels' must hold one label per row of 'data' ({len(pixels):,})")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(STANDARD_SETS["cifar10"].classes)):
        raise DatasetError(f"{where}: labels must be 0-9, found {int(labels.min())}..{int(labels.max())}")
    return pixels.reshape(-1, 3, side, side), labels


def _cifar_source(root: Path) -> Path:
    """The folder of loose batches, or the archive, whichever is found first."""
    for folder in (root / CIFAR_FOLDER, root):
        if (folder / CIFAR_TRAIN[0]).is_file():
            return folder
    if (root / CIFAR_ARCHIVE).is_file():
        return root / CIFAR_ARCHIVE
    raise _not_found("cifar10", root, f"{CIFAR_ARCHIVE}, or its {CIFAR_FOLDER} folder with "
                                      f"{', '.join(CIFAR_TRAIN)} and {CIFAR_TEST}")


def _cifar_batches_bytes(source: Path) -> dict[str, bytes]:
    names = (*CIFAR_TRAIN, CIFAR_TEST)
    if source.is_dir():
        missing = [n for n in names if not (source / n).is_file()]
        if missing:
            raise DatasetError(f"CIFAR-10 in {source}: {', '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} missing. Put the missing batches there.")
        return {n: (source / n).read_bytes() for n in names}
    found = {}
    try:
        with tarfile.open(source, "r:gz") as archive:     # read in memory: nothing is extracted
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in found:
                    found[base] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{source} is damaged or truncated ({error}); nothing was extracted") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DatasetError(f"{source} does not hold {', '.join(missing)} (CIFAR-10's python batches)")
    return found


def _cifar_set(root: Path):
    source = _cifar_source(root)
    parts = {name: _cifar_batch(data, f"{source}: {name}" if source.is_file() else str(source / name))
             for name, data in _cifar_batches_bytes(source).items()}
    train = [parts[n] for n in CIFAR_TRAIN]
    return {"train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
            "test": parts[CIFAR_TEST]}, (3, CIFAR_SIDE, CIFAR_SIDE)


# --- the two entry points --------------------------------------------------------------------------
def _files_key(dataset: str, root: Path) -> tuple:
    """The files a set would be read from, with their sizes and times: a describe() cache key."""
    paths = (_idx_paths(dataset, root).values() if STANDARD_SETS[dataset].layout == "idx"
             else [_cifar_source(root)])
    keys = []
    for path in paths:
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            stat = file.stat()
            keys.append((str(file), stat.st_size, stat.st_mtime_ns))
    return tuple(keys)


@functools.lru_cache(maxsize=8)
def _describe(dataset: str, root: Path, _files: tuple) -> Described:
    if STANDARD_SETS[dataset].layout == "idx":
        parts, shape = _idx_set(dataset, _idx_paths(dataset, root), with_images=False)
    else:
        parts, shape = _cifar_set(root)
    return Described(parts["train"][1], parts["test"][1], shape)


def describe(dataset: str, root: Path) -> Described:
    """Labels and image shape of a standard set, from headers and label files (CIFAR's batches are
    read whole; the answer is cached while its files are unchanged). DatasetError says what is
    missing or wrong, and where."""
    try:
        return _describe(dataset, root, _files_key(dataset, root))
    except PermissionError as error:
        raise DatasetError(f"{error.filename}: cannot be read ({error.strerror})") from None


def read(dataset: str, root: Path) -> tuple[list[str], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(classes, {"train": (images, labels), "test": (images, labels)}), images uint8 [N, C, H, W]."""
    try:
        if STANDARD_SETS[dataset].layout == "idx":
            parts, _ = _idx_set(dataset, _idx_paths(dataset, root), with_images=True)
        else:
            parts, _ = _cifar_set(root)
    except PermissionError as error:
        raise DatasetError(f"{error.filename}: cannot be read ({error.strerror})") from None
    return list(STANDARD_SETS[dataset].classes), parts
