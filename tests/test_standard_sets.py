"""MNIST, Fashion-MNIST and CIFAR-10 from their original files, made here: IDX gzipped or not, in the
folder named or torchvision's layout; CIFAR's python batches loose or in the .tar.gz; damaged and
missing files named with the folder; nothing ever written into the data folder."""
import gzip
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from core.config import RunConfig
from core.data.datasets import DatasetError, check_data, load_dataset
from core.data.standard_sets import STANDARD_SETS

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(array: np.ndarray, magic_type: int = 0x08) -> bytes:
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def sample_images(n: int, side: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images whose brightness follows their label (0-9), so the two are easy to check together."""
    labels = np.arange(n) % 10
    noise = np.random.default_rng(seed).integers(0, 20, (n, channels, side, side))
    return (labels[:, None, None, None] * 20 + noise).astype(np.uint8), labels


def write_idx_set(folder, gz: bool, side: int = 8) -> dict:
    """The four IDX files of a small set in `folder`; returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n, seed in (("train", 60, 1), ("test", 20, 2)):
        images, labels = sample_images(n, side, 1, seed)
        written[split] = images, labels
        for name, data in zip(IDX_NAMES[split], (idx_bytes(images[:, 0]), idx_bytes(labels))):
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return written


def listing(folder) -> dict:
    """Every path under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def config(dataset: str, data_path, **values) -> RunConfig:
    values = {"image_size": 8, "channels": 1, "batch_size": 8, **values}
    return RunConfig.for_dataset(dataset, data_path=str(data_path), **values)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw"], ids=["in-the-folder", "torchvision-layout"])
def test_idx_files_are_read_where_they_are_and_nothing_is_written(tmp_path, gz, layout):
    root = tmp_path / "data"
    written = write_idx_set(root / layout if layout else root, gz)
    before = listing(root)
    cfg = config("fashion-mnist", root)
    assert check_data(cfg) == []
    data = load_dataset(cfg)
    assert listing(root) == before          # no extracted copies, no empty FashionMNIST/raw folders
    assert data.classes == list(STANDARD_SETS["fashion-mnist"].classes)
    assert data.input_shape == (1, 8, 8)
    assert len(data.splits["train"]) + len(data.splits["val"]) == 60
    test_images, test_labels = written["test"]
    assert np.array_equal(data.splits["test"].images.numpy(), test_images)      # the official test split, as is
    assert np.array_equal(data.splits["test"].labels.numpy(), test_labels)


def test_a_gzip_file_without_the_gz_suffix_is_read_too(tmp_path):
    write_idx_set(tmp_path, gz=True)
    for path in tmp_path.glob("*.gz"):
        path.rename(path.with_suffix(""))       # as some mirrors serve them
    assert len(load_dataset(config("mnist", tmp_path)).splits["test"]) == 20


def test_a_wrong_magic_number_is_named_with_the_file(tmp_path):
    write_idx_set(tmp_path, gz=False)
    images, _ = sample_images(60, 8, 1, 1)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(images[:, 0], magic_type=0x0D))   # floats
    [problem] = check_data(config("mnist", tmp_path))
    assert problem == (f"{tmp_path / 'train-images-idx3-ubyte'} is not an IDX train images file: its magic number "
                       "is 0x00000d03, expected 0x00000803 (unsigned bytes, 3 dimensions)")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_a_truncated_file_is_found_before_any_image_is_decoded(tmp_path, gz):
    write_idx_set(tmp_path, gz)
    name = "t10k-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-100])
    [problem] = check_data(config("fashion-mnist", tmp_path))
    assert problem.startswith(f"{path} is truncated or damaged: its header promises 20 test images of 8x8 "
                              "(1,280 bytes)")
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(config("fashion-mnist", tmp_path))


def test_a_missing_labels_file_is_named_with_its_folder(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    write_idx_set(raw, gz=True)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    [problem] = check_data(config("mnist", tmp_path))
    assert problem == (f"MNIST in {raw}: t10k-labels-idx1-ubyte[.gz] is missing (found train-images-idx3-ubyte.gz, "
                       "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz). Put the missing file there.")


def test_no_files_at_all_names_every_file_and_folder_looked_in_and_creates_nothing(tmp_path):
    root = tmp_path / "data"
    [problem] = check_data(config("fashion-mnist", root))
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in problem
    assert f"in {root}, {root / 'FashionMNIST' / 'raw'}, {root / 'FashionMNIST'} ({root} does not exist)" in problem
    assert "/usr/share/datasets/fashion-mnist" in problem           # where Debian's package puts them
    assert not root.exists()


def test_the_default_folder_is_named_where_it_is_not_as_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINBOARD_DATA", raising=False)
    [problem] = check_data(config("fashion-mnist", ""))      # the default: ./data, for the server
    assert f"in {tmp_path / 'data'}, " in problem and f"Put them in {tmp_path / 'data'}," in problem


def test_labels_out_of_range_or_counts_that_differ_are_named(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.full(60, 12)))
    assert check_data(config("mnist", tmp_path)) == [
        f"{tmp_path / 'train-labels-idx1-ubyte'} holds label 12; 10 classes are 0-9"]
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(59)))
    assert check_data(config("mnist", tmp_path)) == [
        f"{tmp_path / 'train-labels-idx1-ubyte'} holds 59 labels but {tmp_path / 'train-images-idx3-ubyte'} "
        "holds 60 images"]


# --- CIFAR-10 ------------------------------------------------------------------------------------
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_batches(n: int = 10) -> dict[str, tuple[np.ndarray, list[int]]]:
    return {name: (images.reshape(n, -1), labels.tolist())
            for i, name in enumerate(CIFAR_BATCHES)
            for images, labels in [sample_images(n, 32, 3, seed=i)]}


def py3_batch(pixels, labels) -> bytes:
    return pickle.dumps({b"batch_label": b"made by a test", b"labels": labels, b"data": pixels,
                         b"filenames": [b"x.png"] * len(labels)})


def py2_batch(pixels: np.ndarray, labels) -> bytes:
    """A batch pickled as CIFAR-10's own files were, by Python 2: its str holds the pixels, NumPy is
    named numpy.core (Python 3 cannot write this, so the opcodes are spelled out)."""
    def text(b):
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def small(n):
        return b"K" + bytes([n])
    rows, cols = pixels.shape
    dtype = (b"cnumpy\ndtype\n" + text(b"u1") + small(0) + small(1) + b"\x87R"
             + b"(" + small(3) + text(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + small(0) + b"tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + small(0) + b"\x85" + text(b"b")
             + b"\x87R" + b"(" + small(1) + b"M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", cols)
             + b"\x86" + dtype + b"\x89" + text(pixels.tobytes()) + b"tb")
    return (b"\x80\x02}(" + text(b"data") + array + text(b"labels") + b"](" + b"".join(small(v) for v in labels)
            + b"eu.")


@pytest.mark.parametrize("source", ["batches-folder", "tar.gz", "python-2-pickles"])
def test_cifar_batches_are_read_loose_or_from_the_archive_without_extracting(tmp_path, source):
    root = tmp_path / "data"
    batches = cifar_batches()
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, (pixels, labels) in batches.items():
        (folder / name).write_bytes((py2_batch if source == "python-2-pickles" else py3_batch)(pixels, labels))
    if source == "tar.gz":
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as archive:
            archive.add(folder, arcname="cifar-10-batches-py")
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    before = listing(root)
    cfg = config("cifar10", root, image_size=32, channels=3)
    assert check_data(cfg) == []
    data = load_dataset(cfg)
    assert listing(root) == before
    assert data.classes[:3] == ["airplane", "automobile", "bird"] and data.input_shape == (3, 32, 32)
    assert len(data.splits["train"]) + len(data.splits["val"]) == 50
    pixels, labels = batches["test_batch"]
    assert np.array_equal(data.splits["test"].images.numpy().reshape(10, -1), pixels)
    assert data.splits["test"].labels.tolist() == labels


class _RunsCode:
    """A pickle that calls os.mkdir when loaded: what a hostile 'batch' could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_a_cifar_batch_that_names_code_is_refused_before_it_runs(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, (pixels, labels) in cifar_batches().items():
        (folder / name).write_bytes(py3_batch(pixels, labels))
    marker = tmp_path / "code-ran"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(marker), b"labels": []}))
    [problem] = check_data(config("cifar10", tmp_path, image_size=32, channels=3))
    assert problem.startswith(f"{folder / 'data_batch_3'} is not a CIFAR-10 python batch: it names ")
    assert "mkdir, which a CIFAR-10 batch never does" in problem
    assert not marker.exists()


def test_a_truncated_cifar_archive_and_a_missing_batch_are_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, (pixels, labels) in cifar_batches().items():
        if name != "data_batch_4":
            (folder / name).write_bytes(py3_batch(pixels, labels))
    assert check_data(config("cifar10", tmp_path, image_size=32, channels=3)) == [
        f"CIFAR-10 in {folder}: data_batch_4 is missing. Put the missing batches there."]
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    whole = (archive_dir / "cifar-10-python.tar.gz").read_bytes()
    (archive_dir / "cifar-10-python.tar.gz").write_bytes(whole[:len(whole) // 2])
    [problem] = check_data(config("cifar10", archive_dir, image_size=32, channels=3))
    assert problem.startswith(f"{archive_dir / 'cifar-10-python.tar.gz'} is damaged or truncated")
    assert not (archive_dir / "cifar-10-batches-py").exists()


def test_a_folder_one_level_above_the_files_gets_a_hint(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", gz=True)
    [problem] = check_data(config("fashion-mnist", tmp_path))
    assert problem.endswith(f"{tmp_path / 'fashion-mnist'} seems to hold them: set Folder to it.")
