import warnings

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.data import (DatasetError, check_data, load_dataset, stratified_split,
                       validate_run_config)
from test_pages import app  # noqa: F401  (the AppTest fixture)


def test_digits_loads_offline_with_counts_shape_and_stats():
    data = load_dataset(RunConfig.for_dataset("digits", image_size=16))
    assert data.classes == [str(i) for i in range(10)]
    assert data.input_shape == (1, 16, 16)
    counts = data.counts()
    assert sum(sum(c) for c in counts.values()) == 1797
    assert all(len(c) == 10 for c in counts.values())
    assert 0 < data.mean[0] < 1 and 0 < data.std[0] < 1
    assert data.splits["train"].images.dtype == torch.uint8


def test_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    a = stratified_split(labels, 0.2, 0.1, seed=1)
    b = stratified_split(labels, 0.2, 0.1, seed=1)
    c = stratified_split(labels, 0.2, 0.1, seed=2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])
    every = np.concatenate(list(a.values()))
    assert len(every) == len(set(every.tolist())) == len(labels)
    assert np.bincount(labels[a["val"]]).tolist() == [20, 10, 6, 4]
    assert np.bincount(labels[a["test"]]).tolist() == [10, 5, 3, 2]


def test_image_folder_resizes_mixed_sizes(image_folder):
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=16,
                                   batch_size=4, val_fraction=0.25, test_fraction=0.25)
    data = load_dataset(config)
    assert data.classes == ["dark", "light", "mid"]
    assert data.input_shape == (3, 16, 16)
    assert sum(len(s) for s in data.splits.values()) == 36
    assert data.counts()["val"] == [3, 3, 3]


def test_unreadable_images_are_skipped_and_counted(image_folder):
    (image_folder / "dark" / "broken.png").write_bytes(b"not a png at all")
    (image_folder / "mid" / "truncated.png").write_bytes((image_folder / "mid" / "1.png").read_bytes()[:40])
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(config)
    assert len(data.skipped) == 2
    assert any("skipped 2 unreadable" in str(w.message) for w in caught)
    assert sum(len(s) for s in data.splits.values()) == 36


def _add_odd_files(image_folder) -> dict[str, str]:
    """Misnamed odd files among good ones (as found in real folders): path -> what the refusal says."""
    from test_images import REFUSED_FILES
    expected = {}
    for folder, name in zip(("dark", "mid", "light", "dark"), ("dds-unknown-pixel-format", "psd-truncated",
                                                              "png-oversize-ztxt", "tiff-huge-strip-offset")):
        data, reason = REFUSED_FILES[name]
        path = image_folder / folder / f"{name}.png"
        path.write_bytes(data)
        expected[str(path)] = reason
    return expected


def test_odd_files_are_skipped_and_named_with_their_reason(image_folder, monkeypatch):
    import core.data
    expected = _add_odd_files(image_folder)
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(config)
    assert sum(len(s) for s in data.splits.values()) == 36
    assert {path: reason for path, reason in data.skipped}.keys() == expected.keys()
    assert all(expected[path] in reason for path, reason in data.skipped)
    assert any("skipped 4 unreadable" in str(w.message) for w in caught)
    monkeypatch.setattr(core.data, "SKIPPED_NAMED_IN_INFO", 3)     # status.json stays small
    info = data.info()
    assert info["skipped"] == 4 and len(info["skipped_files"]) == 3
    assert all(expected[row["file"]] in row["reason"] for row in info["skipped_files"])


def test_a_streamed_folder_skips_and_names_odd_files(image_folder, monkeypatch):
    import core.data
    expected = _add_odd_files(image_folder)
    monkeypatch.setattr(core.data, "IN_MEMORY_LIMIT_BYTES", 10)
    monkeypatch.setattr(core.data, "decode_sample", lambda files, *args: ([], []))   # found while streaming
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8,
                                   batch_size=4, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    data = load_dataset(config)
    assert data.streaming and data.info()["skipped"] == 0
    streamed = 0
    for split in data.splits.values():
        for images, labels in split.batches(torch.arange(len(split)), 4):
            streamed += len(labels)
    assert streamed == 36
    info = data.info()
    assert info["skipped"] == 4
    assert all(expected[row["file"]] in row["reason"] for row in info["skipped_files"])


def test_training_on_a_folder_with_odd_files_completes_and_names_them(image_folder, store, app):
    from core.worker import run_training
    expected = _add_odd_files(image_folder)
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8, model="mlp",
                                   epochs=1, batch_size=8)
    run_id = store.create_run(config)
    assert run_training(store, run_id, handle_signals=False) == "completed"
    status = store.read_status(run_id)
    assert status["skipped_images"] == 4
    assert all(expected[row["file"]] in row["reason"] for row in status["skipped_files"])
    assert {row["file"] for row in status["skipped_files"]} == set(expected)
    app.run().switch_page("pages/train.py").run()          # the run's live view names them too
    [expander] = [e for e in app.expander if "left out of training" in e.label]
    assert expander.label.startswith("4 image file(s)")
    assert set(expander.dataframe[0].value["file"]) == set(expected)


def test_datasets_page_names_odd_files_instead_of_crashing(app, image_folder):
    expected = _add_odd_files(image_folder)
    app.run().switch_page("pages/datasets.py").run()
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(image_folder)).run()
    assert not app.exception, [e.value for e in app.exception]
    assert [e.label for e in app.expander] == ["4 files skipped: cannot be read"]
    [skipped] = [frame.value for frame in app.dataframe if "reason" in frame.value]
    assert sorted(skipped["file"]) == sorted(expected)
    assert all(expected[path] in reason for path, reason in zip(skipped["file"], skipped["reason"]))
    [blanks] = [c.value for c in app.caption if c.value.startswith("Blank: cannot be read.")]   # class "dark"
    assert "dds-unknown-pixel-format.png: unsupported kind of image (DDS" in blanks


def test_grayscale_folder(image_folder):
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8, channels=1)
    assert load_dataset(config).input_shape == (1, 8, 8)


def test_csv_folder(csv_folder):
    config = RunConfig.for_dataset("csv-folder", data_path=str(csv_folder), image_size=8, batch_size=4)
    data = load_dataset(config)
    assert data.classes == ["cat", "dog"]
    assert sum(sum(c) for c in data.counts().values()) == 20


def test_csv_rows_cannot_escape_the_folder(csv_folder):
    (csv_folder / "labels.csv").write_text("filename,label\n../../etc/passwd,cat\nimg/dog1.png,dog\n")
    config = RunConfig.for_dataset("csv-folder", data_path=str(csv_folder), batch_size=1)
    with pytest.raises(DatasetError, match="points outside"):
        load_dataset(config)


def test_large_folders_stream_through_a_dataloader(image_folder, monkeypatch):
    import core.data
    monkeypatch.setattr(core.data, "IN_MEMORY_LIMIT_BYTES", 10)
    config = RunConfig.for_dataset("image-folder", data_path=str(image_folder), image_size=8,
                                   batch_size=4, num_workers=0)
    data = load_dataset(config)
    assert data.streaming
    split = data.splits["train"]
    images, labels = next(split.batches(torch.arange(len(split)), 4))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8 and labels.shape == (4,)


def _problems(tmp_path, **values):
    return validate_run_config(RunConfig.for_dataset(values.pop("dataset", "image-folder"), **values))


def test_bad_data_gets_clear_messages(tmp_path, image_folder):
    assert _problems(tmp_path, data_path=str(tmp_path / "missing")) == [f"data_path {tmp_path / 'missing'} does not exist"]
    (tmp_path / "empty").mkdir()
    assert "holds no images" in _problems(tmp_path, data_path=str(tmp_path / "empty"))[0]
    (tmp_path / "afile.txt").write_text("x")
    assert "is a file" in _problems(tmp_path, data_path=str(tmp_path / "afile.txt"))[0]
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    (image_folder / "dark" / "1.png").rename(single / "1.png")
    assert "single class (only)" in _problems(tmp_path, data_path=str(single.parent))[0]
    assert _problems(tmp_path, dataset="digits", batch_size=5000) == [
        "batch_size 5000 is larger than the training split (1259 samples)"]
    assert _problems(tmp_path, dataset="nope") == [
        "dataset must be one of digits, image-folder, csv-folder, mnist, fashion-mnist, cifar10; got 'nope'"]


def test_batch_size_check_matches_the_real_split():
    config = RunConfig.for_dataset("digits", image_size=8)
    assert len(load_dataset(config).splits["train"]) == 1259
    assert check_data(config) == []


def test_torchvision_sets_explain_where_to_put_files(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, download=False, **kwargs):
        raise RuntimeError("Dataset not found" if not download else "no network")
    monkeypatch.setattr(tvd, "MNIST", offline)
    with pytest.raises(DatasetError, match=r"mnist is not on disk .* Put torchvision's MNIST files in"):
        load_dataset(RunConfig.for_dataset("mnist", data_path=str(tmp_path)))
