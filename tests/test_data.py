import shutil
import warnings

import numpy as np
import pytest
import torch

from core.config import RunConfig
from core.data.datasets import DatasetError, check_data, load_dataset, stratified_split, validate_run_config
from core.data.folders import proposed_config
from pages.common.site import page_path


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
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=16,
                                   batch_size=4, val_fraction=0.25, test_fraction=0.25)
    data = load_dataset(config)
    assert data.classes == ["dark", "light", "mid"]
    assert data.input_shape == (3, 16, 16)
    assert sum(len(s) for s in data.splits.values()) == 36
    assert data.counts()["val"] == [3, 3, 3]


def test_unreadable_images_are_skipped_and_counted(image_folder):
    (image_folder / "dark" / "broken.png").write_bytes(b"not a png at all")
    (image_folder / "mid" / "truncated.png").write_bytes((image_folder / "mid" / "1.png").read_bytes()[:40])
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, batch_size=4)
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
    import core.data.datasets
    expected = _add_odd_files(image_folder)
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, batch_size=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(config)
    assert sum(len(s) for s in data.splits.values()) == 36
    assert {path: reason for path, reason in data.skipped}.keys() == expected.keys()
    assert all(expected[path] in reason for path, reason in data.skipped)
    assert any("skipped 4 unreadable" in str(w.message) for w in caught)
    monkeypatch.setattr(core.data.datasets, "SKIPPED_NAMED_IN_INFO", 3)     # status.json stays small
    info = data.info()
    assert info["skipped"] == 4 and len(info["skipped_files"]) == 3
    assert all(expected[row["file"]] in row["reason"] for row in info["skipped_files"])


def test_a_streamed_folder_skips_and_names_odd_files(image_folder, monkeypatch):
    import core.data.datasets
    expected = _add_odd_files(image_folder)
    monkeypatch.setattr(core.data.datasets, "IN_MEMORY_LIMIT_BYTES", 10)
    monkeypatch.setattr(core.data.datasets, "decode_sample", lambda files, *args: ([], []))   # found while streaming
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8,
                                   batch_size=4, num_workers=0, val_fraction=0.25, test_fraction=0.25)
    data = load_dataset(config)
    assert data.streaming and data.info()["skipped"] == 0
    streamed = 0
    for split in data.splits.values():
        for _images, labels in split.batches(torch.arange(len(split)), 4):
            streamed += len(labels)
    assert streamed == 36
    info = data.info()
    assert info["skipped"] == 4
    assert all(expected[row["file"]] in row["reason"] for row in info["skipped_files"])


def test_training_on_a_folder_with_odd_files_completes_and_names_them(image_folder, store, app, train):
    expected = _add_odd_files(image_folder)
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, model="mlp",
                                   epochs=1, batch_size=8)
    run_id = store.create_run(config)
    assert train(store, run_id) == "completed"
    status = store.read_status(run_id)
    assert status["skipped_images"] == 4
    assert all(expected[row["file"]] in row["reason"] for row in status["skipped_files"])
    assert {row["file"] for row in status["skipped_files"]} == set(expected)
    app.run().switch_page(page_path("train")).run()          # the run's live view names them too
    [expander] = [e for e in app.expander if "left out of training" in e.label]
    assert expander.label.startswith("4 image file(s)")
    assert set(expander.dataframe[0].value["file"]) == set(expected)


def test_datasets_page_names_odd_files_instead_of_crashing(app, image_folder):
    expected = _add_odd_files(image_folder)
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(image_folder)).run()
    assert not app.exception, [e.value for e in app.exception]
    assert [e.label for e in app.expander if "left out" in e.label] == [
        "4 files left out of training: 4 cannot be read"]
    [skipped] = [frame.value for frame in app.dataframe if "reason" in frame.value]
    assert sorted(skipped["file"]) == sorted(expected)
    assert all(expected[path] in reason for path, reason in zip(skipped["file"], skipped["reason"]))
    [blanks] = [c.value for c in app.caption if c.value.startswith("Blank: cannot be read.")]   # class "dark"
    assert "dds-unknown-pixel-format.png: unsupported kind of image (DDS" in blanks


def test_grayscale_folder(image_folder):
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8, channels=1)
    assert load_dataset(config).input_shape == (1, 8, 8)


def test_csv_folder(csv_folder):
    config = proposed_config("csv-folder", data_path=str(csv_folder), image_size=8, batch_size=4)
    data = load_dataset(config)
    assert data.classes == ["cat", "dog"]
    assert sum(sum(c) for c in data.counts().values()) == 20


def test_csv_rows_cannot_escape_the_folder(csv_folder):
    (csv_folder / "labels.csv").write_text("filename,label\n../../etc/passwd,cat\nimg/dog1.png,dog\n")
    config = proposed_config("csv-folder", data_path=str(csv_folder), batch_size=1)
    with pytest.raises(DatasetError, match="points outside"):
        load_dataset(config)


def test_large_folders_stream_through_a_dataloader(image_folder, monkeypatch):
    import core.data.datasets
    monkeypatch.setattr(core.data.datasets, "IN_MEMORY_LIMIT_BYTES", 10)
    config = proposed_config("image-folder", data_path=str(image_folder), image_size=8,
                                   batch_size=4, num_workers=0)
    data = load_dataset(config)
    assert data.streaming
    split = data.splits["train"]
    images, labels = next(split.batches(torch.arange(len(split)), 4))
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8 and labels.shape == (4,)


def _problems(tmp_path, **values):
    return validate_run_config(proposed_config(values.pop("dataset", "image-folder"), **values))


def test_bad_data_gets_clear_messages(tmp_path, image_folder):
    assert _problems(tmp_path, data_path=str(tmp_path / "missing")) == [f"Folder {tmp_path / 'missing'} does not exist"]
    (tmp_path / "empty").mkdir()
    assert "holds no images" in _problems(tmp_path, data_path=str(tmp_path / "empty"))[0]
    (tmp_path / "afile.txt").write_text("x")
    assert "is a file" in _problems(tmp_path, data_path=str(tmp_path / "afile.txt"))[0]
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    (image_folder / "dark" / "1.png").rename(single / "1.png")
    assert "single class (only)" in _problems(tmp_path, data_path=str(single.parent))[0]
    assert _problems(tmp_path, dataset="digits", batch_size=5000) == [
        "Batch size 5000 is larger than the training split (1,259 samples)"]
    assert _problems(tmp_path, dataset="nope") == [
        "dataset must be one of digits, image-folder, csv-folder, mnist, fashion-mnist, cifar10; got 'nope'"]


def test_batch_size_check_matches_the_real_split():
    config = RunConfig.for_dataset("digits", image_size=8)
    assert len(load_dataset(config).splits["train"]) == 1259
    assert check_data(config) == []


# --- folders: native size, layouts, files left out ----------------------------------------------------
def _gray_folder(root, side=28, per_class=6):
    from conftest import write_png
    for label, value in (("a", 30), ("b", 200)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            write_png(root / label / f"{i}.png", value + i, size=(side, side), mode="L")
    return root


def test_a_folder_of_small_grayscale_images_is_proposed_at_its_own_size(tmp_path, image_folder):
    gray = _gray_folder(tmp_path / "gray")
    assert (proposed_config("image-folder", data_path=str(gray)).image_size,
            proposed_config("image-folder", data_path=str(gray)).channels) == (28, 1)
    assert proposed_config("image-folder", data_path=str(gray), image_size=12).image_size == 12   # asked for
    big = _gray_folder(tmp_path / "big", side=300)
    assert proposed_config("image-folder", data_path=str(big)).image_size == 64      # the default caps it
    config = proposed_config("image-folder", data_path=str(image_folder))   # 12x12 RGB, one 20x16
    assert (config.image_size, config.channels) == (12, 3)


def test_datasets_page_proposes_the_folders_size_and_keeps_a_chosen_one(app, tmp_path):
    gray = _gray_folder(tmp_path / "gray")
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(gray)).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.number_input(key="ds_size_image-folder").value == 28
    assert app.selectbox(key="ds_channels_image-folder").value == 1
    assert any("100% of 12 sampled images are 28x28 grayscale" in c.value for c in app.caption)
    app.number_input(key="ds_size_image-folder").set_value(16).run()
    app.text_input(key="ds_path").input(str(gray) + "/").run()     # the same folder typed again
    assert app.number_input(key="ds_size_image-folder").value == 16


def test_a_csv_naming_missing_files_lists_the_first_ones(csv_folder):
    rows = ["filename,label"] + [f"img/cat{i}.png,cat" for i in range(10)] + \
        [f"photos/dog{i}.png,dog" for i in range(7)]
    (csv_folder / "labels.csv").write_text("\n".join(rows) + "\n")
    [problem] = _problems(csv_folder, dataset="csv-folder", data_path=str(csv_folder))
    assert problem.startswith(f"Labels CSV (filename,label) {csv_folder / 'labels.csv'} names 7 files (of 17) that "
                              f"are not in Folder {csv_folder}: photos/dog0.png, photos/dog1.png, photos/dog2.png, "
                              "photos/dog3.png, photos/dog4.png, ...")


def test_a_csv_whose_paths_are_relative_to_a_subfolder_says_so(csv_folder):
    (csv_folder / "labels.csv").write_text("filename,label\ncat1.png,cat\ndog1.png,dog\n")
    [problem] = _problems(csv_folder, dataset="csv-folder", data_path=str(csv_folder))
    assert problem.endswith(f"{csv_folder / 'img' / 'cat1.png'} exists: set Folder to {csv_folder / 'img'}.")


def test_layouts_that_are_almost_right_get_a_hint(tmp_path, image_folder):
    wrapper = tmp_path / "download"
    wrapper.mkdir()
    image_folder.rename(wrapper / "images")
    [problem] = _problems(tmp_path, data_path=str(wrapper))
    assert problem == (f"Folder {wrapper} is one level too deep: it holds only images/, whose folders (dark, light, "
                       f"mid) look like classes. Set Folder to {wrapper / 'images'}.")
    splits = tmp_path / "splits"
    splits.mkdir()
    (wrapper / "images").rename(splits / "train")
    shutil.copytree(splits / "train", splits / "test")
    [problem] = _problems(tmp_path, data_path=str(splits))
    assert problem.startswith(f"Folder {splits} holds split folders (test, train), each with class folders inside. "
                              f"Set Folder to {splits / 'train'}")
    loose = tmp_path / "loose"
    loose.mkdir()
    for path in sorted((splits / "train" / "dark").iterdir())[:3]:
        shutil.copy(path, loose / path.name)
    [problem] = _problems(tmp_path, data_path=str(loose))
    assert "holds 3 images directly. Put each class's images in a folder of its own" in problem


def test_stray_non_image_and_empty_class_files_are_counted_and_named(app, image_folder):
    (image_folder / "notes.txt").write_text("where these came from")
    (image_folder / "stray.png").write_bytes((image_folder / "dark" / "1.png").read_bytes())
    (image_folder / "mid" / "labels.json").write_text("{}")
    (image_folder / "empty").mkdir()
    (image_folder / "dark" / "broken.png").write_bytes(b"not a png")
    (image_folder / "light" / ".DS_Store").write_bytes(b"hidden: not ours to name")
    from core.data.folders import list_folder
    listing = list_folder(proposed_config("image-folder", data_path=str(image_folder)))
    assert listing.classes == ["dark", "light", "mid"] and len(listing.files) == 37
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").set_value("image-folder").run()
    app.text_input(key="ds_path").input(str(image_folder)).run()
    assert not app.exception, [e.value for e in app.exception]
    assert [e.label for e in app.expander if "left out" in e.label] == [
        "5 files left out of training: 1 cannot be read, 1 empty class folder, "
        "2 not an image file, 1 outside the class folders"]
    [table] = [frame.value for frame in app.dataframe if "reason" in frame.value]
    named = dict(zip(table["file"], table["reason"]))
    assert named[str(image_folder / "notes.txt")].startswith("not an image file (only .png, .jpg")
    assert named[str(image_folder / "mid" / "labels.json")].startswith("not an image file")
    assert named[str(image_folder / "stray.png")] == "outside the class folders"
    assert named[str(image_folder / "empty")] == "empty class folder: no image files in it"
    assert "not an image" in named[str(image_folder / "dark" / "broken.png")]
