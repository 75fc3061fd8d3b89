"""Uploaded images as managed datasets: zips of class folders imported safely (hostile zips refused
before anything is unpacked, nothing written on failure), images added per class, datasets deleted
(bad names refused, never half-deleted), the CLI command and the Datasets page's "Add your own
images" section. Every zip is made here by the test."""
import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import no_errors
from core.data import imports, uploads
from core.data.folders import proposed_config
from core.data.imports import add_images, import_zip
from core.data.uploads import (
    DatasetRefused,
    UploadRefused,
    datasets_dir,
    delete_dataset,
    list_datasets,
    remove_class,
    remove_images,
)
from pages.common.site import page_path


def png(value: int, size=(10, 10), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    pixels = np.full((size[1], size[0], 3), value, np.uint8)
    pixels[0, 0] = 255 - value                        # no two test images alike
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def make_zip(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def class_zip(path: Path, classes=("cat", "dog", "fox"), per_class=4, prefix="") -> Path:
    return make_zip(path, {f"{prefix}{c}/{i}.png": png(40 * k + i) for k, c in enumerate(classes)
                           for i in range(per_class)})


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "runs" / ".datasets"


def test_a_zip_of_class_folders_becomes_an_image_folder_dataset(tmp_path, root):
    from core.config import RunConfig
    from core.data.folders import list_folder
    source = class_zip(tmp_path / "pets.zip")
    result = import_zip(source, root, "pets")
    assert result.created and result.path == root / "pets"
    assert result.added == result.counts == {"cat": 4, "dog": 4, "fox": 4}
    assert not result.refused
    assert (root / "pets" / "dog" / "2.png").read_bytes() == png(40 + 2)     # kept byte for byte
    listing = list_folder(RunConfig(dataset="image-folder", data_path=str(result.path)))
    assert listing.classes == ["cat", "dog", "fox"] and len(listing.files) == 12 and not listing.left_out
    assert [d.name for d in list_datasets(root)] == ["pets"] and list_datasets(root)[0].images == 12
    assert os.listdir(root) == ["pets"]                     # no stage left beside it


def test_a_zip_of_one_folder_holding_the_classes_and_finder_litter(tmp_path, root):
    entries = {f"My Pets/{c}/{i}.png": png(60 * k + i) for k, c in enumerate(("cat", "dog")) for i in range(3)}
    entries.update({"__MACOSX/My Pets/cat/._0.png": b"\0\5\26\7", "My Pets/.DS_Store": b"junk",
                    "My Pets/dog/Thumbs.db": b"junk"})
    result = import_zip(make_zip(tmp_path / "p.zip", entries), root, "my-pets")
    assert result.counts == {"cat": 3, "dog": 3}
    assert result.ignored == 3 and not result.refused


def test_a_zip_holding_one_class_folder_keeps_it_as_the_class(tmp_path, root):
    result = import_zip(make_zip(tmp_path / "c.zip", {f"cats/{i}.png": png(i) for i in range(3)}), root, "c")
    assert result.counts == {"cats": 3}
    assert "at least two classes" in result.describe()


@pytest.mark.parametrize("hostile", ["../evil.png", "cat/../../evil.png", "/tmp/evil.png", "C:/evil.png",
                                     "..\\evil.png"])
def test_paths_leading_outside_refuse_the_whole_zip(tmp_path, root, hostile):
    source = make_zip(tmp_path / "slip.zip", {"cat/1.png": png(1), "dog/1.png": png(2), hostile: png(3)})
    with pytest.raises(UploadRefused, match="outside its folder|absolute path"):
        import_zip(source, root, "slip")
    assert files_under(root) == [] and not (tmp_path / "evil.png").exists()


def test_a_symbolic_link_entry_refuses_the_zip(tmp_path, root):
    source = class_zip(tmp_path / "link.zip")
    with zipfile.ZipFile(source, "a") as archive:
        link = zipfile.ZipInfo("cat/passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(UploadRefused, match="symbolic link"):
        import_zip(source, root, "link")
    assert files_under(root) == []


def test_a_zip_bomb_is_refused_from_its_directory_before_anything_is_unpacked(tmp_path, root, monkeypatch):
    source = class_zip(tmp_path / "bomb.zip")
    with zipfile.ZipFile(source, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/huge.bmp", bytes(20 * 1024**2))           # 20 MiB of zeros: ~1000x
    unpacked = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: unpacked.append(a) or pytest.fail("unpacked"))
    with pytest.raises(UploadRefused, match="zip bomb"):
        import_zip(source, root, "bomb")
    assert unpacked == [] and files_under(root) == []


def test_too_many_entries_or_bytes_refuse_the_zip(tmp_path, root, monkeypatch):
    source = class_zip(tmp_path / "many.zip", per_class=2)          # 6 files
    monkeypatch.setattr(imports, "MAX_ZIP_ENTRIES", 5)
    with pytest.raises(UploadRefused, match="6 entries; at most 5"):
        import_zip(source, root, "many")
    monkeypatch.setattr(imports, "MAX_ZIP_ENTRIES", 100)
    monkeypatch.setattr(imports, "MAX_ZIP_TOTAL_BYTES", 6 * len(png(0)) - 1)
    with pytest.raises(UploadRefused, match="would unpack to"):
        import_zip(source, root, "many")
    assert files_under(root) == []


def test_non_images_and_damaged_images_are_refused_by_name_and_the_rest_imported(tmp_path, root):
    good = png(7)
    entries = {"cat/1.png": png(1), "cat/2.png": png(2), "dog/1.png": png(3), "dog/2.gif": png(4, fmt="GIF"),
               "cat/notes.txt": b"just words", "dog/cut.png": good[: len(good) // 2], "dog/fake.jpg": b"\xff\xd8junk",
               "loose.png": png(5)}
    result = import_zip(make_zip(tmp_path / "mixed.zip", entries), root, "mixed")
    assert result.counts == {"cat": 2, "dog": 2}
    refused = {r.path: r.reason for r in result.refused}
    assert set(refused) == {"cat/notes.txt", "dog/cut.png", "dog/fake.jpg", "loose.png"}
    assert "not an image" in refused["cat/notes.txt"]
    assert "truncated" in refused["dog/cut.png"] and "JPEG" in refused["dog/fake.jpg"]
    assert "outside the class folders" in refused["loose.png"]
    assert "4 files were not imported" in result.describe()
    # a GIF is readable but not a format folders are read in: kept as PNG
    assert Image.open(root / "mixed" / "dog" / "2.png").format == "PNG"


def test_a_zip_with_no_readable_image_writes_nothing(tmp_path, root):
    source = make_zip(tmp_path / "none.zip", {"cat/a.txt": b"x", "dog/b.png": b"\x89PNG\r\n\x1a\nbroken"})
    with pytest.raises(UploadRefused, match="no image could be read.*2 files refused"):
        import_zip(source, root, "none")
    assert files_under(root) == []


def test_not_a_zip_and_a_missing_file(tmp_path, root):
    (tmp_path / "x.zip").write_bytes(b"not a zip at all")
    with pytest.raises(UploadRefused, match="not a zip file"):
        import_zip(tmp_path / "x.zip", root, "x")
    with pytest.raises(UploadRefused, match="does not exist"):
        import_zip(tmp_path / "missing.zip", root, "x")
    assert files_under(root) == []


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "with space", "x" * 65, "-dash"])
def test_unsafe_dataset_names_are_refused(tmp_path, root, name):
    with pytest.raises(UploadRefused, match="cannot be used"):
        import_zip(class_zip(tmp_path / "n.zip"), root, name)
    assert files_under(root) == [] and not (tmp_path / "up").exists()


def test_an_existing_name_is_refused_unless_adding(tmp_path, root):
    import_zip(class_zip(tmp_path / "a.zip", per_class=2), root, "pets")
    before = files_under(root / "pets")
    with pytest.raises(UploadRefused, match="exists already"):
        import_zip(class_zip(tmp_path / "b.zip", classes=("cat", "owl"), per_class=2), root, "pets")
    assert files_under(root / "pets") == before
    result = import_zip(tmp_path / "b.zip", root, "pets", add=True)
    assert not result.created and result.added == {"cat": 2, "owl": 2}
    assert result.counts == {"cat": 4, "dog": 2, "fox": 2, "owl": 2}
    # same file names: the new ones get their own, the old files stay as they were
    assert sorted(p.name for p in (root / "pets" / "cat").iterdir()) == ["0-2.png", "0.png", "1-2.png", "1.png"]
    assert (root / "pets" / "cat" / "0.png").read_bytes() == png(0)


def test_a_failure_mid_import_leaves_no_folder(tmp_path, root, monkeypatch):
    source = class_zip(tmp_path / "a.zip")
    real_write, calls = imports._Stage.write, []

    def write_then_fail(self, *args):
        calls.append(args)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        real_write(self, *args)
    monkeypatch.setattr(imports._Stage, "write", write_then_fail)
    with pytest.raises(UploadRefused, match="No space left.*nothing was imported"):
        import_zip(source, root, "pets")
    assert len(calls) == 5 and os.listdir(root) == []          # neither the dataset nor its stage


def test_a_failure_mid_addition_leaves_the_dataset_as_it_was(tmp_path, root, monkeypatch):
    import_zip(class_zip(tmp_path / "a.zip", per_class=2), root, "pets")
    before = {p: p.read_bytes() for p in (root / "pets").rglob("*.png")}
    real_place, calls = imports._place, []

    def place_then_fail(source, destination):
        calls.append(source)
        if len(calls) == 3:
            raise OSError(5, "Input/output error")
        return real_place(source, destination)
    monkeypatch.setattr(imports, "_place", place_then_fail)
    with pytest.raises(UploadRefused, match="Input/output error"):
        import_zip(class_zip(tmp_path / "b.zip", classes=("cat", "owl"), per_class=2), root, "pets", add=True)
    assert {p: p.read_bytes() for p in (root / "pets").rglob("*.png")} == before
    assert sorted(os.listdir(root / "pets")) == ["cat", "dog", "fox"] and os.listdir(root) == ["pets"]


def test_a_stage_left_by_a_killed_import_is_removed_by_the_next(tmp_path, root):
    left = root / ".import-pets-killed"
    (left / "cat").mkdir(parents=True)
    (left / "cat" / "0.png").write_bytes(png(0))
    recent = root / ".import-pets-running"
    recent.mkdir()
    old = os.stat(left).st_mtime - uploads.STALE_STAGE_S - 60
    os.utime(left, (old, old))
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    assert sorted(os.listdir(root)) == [".import-pets-running", "pets"]       # a live import's stage stays
    assert [d.name for d in list_datasets(root)] == ["pets"]


def test_images_added_per_class_make_a_dataset(root):
    first = add_images(root, "faces", "happy", [("a.png", png(10)), ("b.jpg", png(20, fmt="JPEG")),
                                                ("notes.txt", b"hello"), (".DS_Store", b"x")])
    assert first.created and first.counts == {"happy": 2}
    assert [(r.path, "not an image" in r.reason) for r in first.refused] == [("notes.txt", True)]
    assert first.ignored == 1
    second = add_images(root, "faces", " sad face ", [("a.png", png(30)), ("c.webp", png(40, fmt="WEBP"))])
    assert not second.created and second.counts == {"happy": 2, "sad face": 2}
    assert sorted(os.listdir(root / "faces" / "happy")) == ["a.png", "b.jpg"]


@pytest.mark.parametrize("class_name", ["", "   ", "a/b", "..", ".git", "tab\there"])
def test_unsafe_class_names_are_refused(root, class_name):
    with pytest.raises(UploadRefused, match="class"):
        add_images(root, "faces", class_name, [("a.png", png(1))])
    assert files_under(root) == []


def test_images_for_a_class_none_readable_writes_nothing(root):
    with pytest.raises(UploadRefused, match="no image could be read: x.png"):
        add_images(root, "faces", "happy", [("x.png", b"nope")])
    assert files_under(root) == []


def test_the_managed_folder_lives_in_the_runs_folder_and_is_not_a_run(tmp_path, monkeypatch):
    from conftest import tiny_digits
    from core.runs.store import RunStore
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    runs = tmp_path / "runs"
    assert datasets_dir(runs) == (runs / ".datasets").resolve()
    monkeypatch.setenv("TRAINBOARD_RUNS", str(runs))
    assert datasets_dir() == (runs / ".datasets").resolve()
    store = RunStore(runs)
    run_id = store.create_run(tiny_digits(name="only"))
    import_zip(class_zip(tmp_path / "a.zip"), datasets_dir(runs), "pets")
    assert [s.run_id for s in store.list_runs()] == [run_id] and store.run_ids() == [run_id]
    monkeypatch.setenv("TRAINBOARD_DATASETS", str(tmp_path / "elsewhere"))
    assert datasets_dir(runs) == (tmp_path / "elsewhere").resolve()


# --- deleting ----------------------------------------------------------------------------------------
def test_a_deleted_dataset_is_gone_and_no_longer_listed(tmp_path, root):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    import_zip(class_zip(tmp_path / "b.zip", classes=("ant", "bee")), root, "bugs")
    deleted = delete_dataset(root, "pets")
    assert deleted.name == "pets" and deleted.images == 12 and deleted.counts == {"cat": 4, "dog": 4, "fox": 4}
    assert [d.name for d in list_datasets(root)] == ["bugs"] and uploads.dataset_names(root) == ["bugs"]
    assert os.listdir(root) == ["bugs"]                        # no trash left beside it
    assert len(list((root / "bugs").rglob("*.png"))) == 8
    again = import_zip(class_zip(tmp_path / "a.zip"), root, "pets")      # the name is free again
    assert again.created and again.counts == {"cat": 4, "dog": 4, "fox": 4}


@pytest.mark.parametrize("name", ["../outside", "..", ".", "", "a/b", "pets/cat", "/ABS", ".import-pets-x",
                                  "link", "notes.txt", "nope", " pets"])
def test_a_name_that_is_no_uploaded_dataset_is_refused_and_nothing_changes(tmp_path, root, name):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    (tmp_path / "runs" / "outside" / "cat").mkdir(parents=True)        # what "../outside" would reach
    (tmp_path / "runs" / "outside" / "cat" / "0.png").write_bytes(png(0))
    (root / ".import-pets-x" / "cat").mkdir(parents=True)               # a live import's stage
    (root / "notes.txt").write_text("a file, not a dataset")
    (root / "link").symlink_to(tmp_path / "runs" / "outside")          # a link someone made by hand
    name = str(tmp_path / "runs" / "outside") if name == "/ABS" else name
    before = files_under(tmp_path)
    with pytest.raises(DatasetRefused, match="(not the name of an|no) uploaded dataset.*nothing was deleted"):
        delete_dataset(root, name)
    assert files_under(tmp_path) == before


def test_a_deletion_killed_midway_leaves_nothing_half_visible(tmp_path, root, monkeypatch):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    import_zip(class_zip(tmp_path / "b.zip", classes=("ant", "bee")), root, "bugs")
    real_rmtree = uploads.shutil.rmtree

    def remove_one_file_then_die(path, ignore_errors=False):
        next(Path(path).rglob("*.png")).unlink()            # a part is gone when the process is killed
        raise KeyboardInterrupt
    monkeypatch.setattr(uploads.shutil, "rmtree", remove_one_file_then_die)
    with pytest.raises(KeyboardInterrupt):
        delete_dataset(root, "pets")
    monkeypatch.setattr(uploads.shutil, "rmtree", real_rmtree)
    # every reader sees "bugs" alone: the half-removed folder is hidden under its trash name
    assert [d.name for d in list_datasets(root)] == ["bugs"] and not (root / "pets").exists()
    [left] = [n for n in os.listdir(root) if n != "bugs"]
    assert left.startswith(uploads.TRASH_PREFIX)
    with pytest.raises(DatasetRefused, match="no uploaded dataset named pets"):
        delete_dataset(root, "pets")
    import_zip(class_zip(tmp_path / "c.zip"), root, "owls")        # the next import removes the leftover
    assert sorted(os.listdir(root)) == ["bugs", "owls"]


def test_a_deletion_that_cannot_rename_changes_nothing(tmp_path, root, monkeypatch):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    before = files_under(root)

    def refuse(*args):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(uploads.os, "rename", refuse)
    with pytest.raises(DatasetRefused, match="could not delete pets.*Permission denied; nothing was deleted"):
        delete_dataset(root, "pets")
    assert files_under(root) == before and [d.name for d in list_datasets(root)] == ["pets"]


def test_a_dataset_a_queued_or_running_run_trains_on_is_not_deleted(tmp_path, root, store):
    import time

    from core.runs.states import HOST
    pets = import_zip(class_zip(tmp_path / "a.zip"), root, "pets").path
    import_zip(class_zip(tmp_path / "b.zip"), root, "other")
    run_id = store.create_run(proposed_config("image-folder", data_path=str(pets / "cat" / ".."), name="on-pets"))
    store.update_status(run_id, state="running", pid=os.getpid(), host=HOST, heartbeat=time.time())
    with pytest.raises(DatasetRefused, match=f"pets is the data of on-pets · {run_id} \\(running\\): stop it"):
        delete_dataset(root, "pets", store)
    assert len(list(pets.rglob("*.png"))) == 12
    assert delete_dataset(root, "other", store).name == "other"          # another run's data is free to go
    store.update_status(run_id, state="completed", pid=None)
    delete_dataset(root, "pets", store)            # a finished run keeps its record, not the data
    assert list_datasets(root) == [] and store.read_status(run_id)["state"] == "completed"


def test_a_removed_class_is_gone_with_its_images_and_the_rest_kept(tmp_path, root):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    kept = [name for name in files_under(root) if not name.startswith("pets/fox")]
    dataset, removed = remove_class(root, "pets", "fox")
    assert removed == 4 and dataset.counts == {"cat": 4, "dog": 4}
    assert files_under(root) == kept                       # no trash left behind either


@pytest.mark.parametrize("class_name, says", [
    ("owl", r"pets has no class 'owl' \(its classes: cat, dog, fox\)"), ("../pets", "pets has no class"),
    ("", "pets has no class ''"), (".", "pets has no class '.'")])
def test_a_class_the_dataset_does_not_have_is_refused_and_nothing_changes(tmp_path, root, class_name, says):
    import_zip(class_zip(tmp_path / "a.zip"), root, "pets")
    before = files_under(tmp_path)
    with pytest.raises(DatasetRefused, match=f"{says}.*nothing was deleted"):
        remove_class(root, "pets", class_name)
    assert files_under(tmp_path) == before


def test_the_last_class_or_a_class_a_run_trains_on_is_not_removed(tmp_path, root, store):
    import time

    from core.runs.states import HOST
    import_zip(class_zip(tmp_path / "a.zip", classes=("cat",)), root, "solo")
    with pytest.raises(DatasetRefused, match="cat is the only class of solo: delete the dataset instead"):
        remove_class(root, "solo", "cat")
    pets = import_zip(class_zip(tmp_path / "b.zip"), root, "pets").path
    run_id = store.create_run(proposed_config("image-folder", data_path=str(pets), name="on-pets"))
    store.update_status(run_id, state="running", pid=os.getpid(), host=HOST, heartbeat=time.time())
    before = files_under(root)
    with pytest.raises(DatasetRefused, match="pets is the data of on-pets .* stop it before removing a class"):
        remove_class(root, "pets", "fox", store)
    assert files_under(root) == before


def test_chosen_images_are_deleted_and_the_rest_kept(tmp_path, root):
    pets = import_zip(class_zip(tmp_path / "a.zip"), root, "pets").path
    cat, dog = sorted(os.listdir(pets / "cat")), sorted(os.listdir(pets / "dog"))
    kept = [name for name in files_under(root) if name not in (f"pets/cat/{cat[0]}", f"pets/dog/{dog[1]}")]
    dataset, removed = remove_images(root, "pets", [f"cat/{cat[0]}", pets / "dog" / dog[1]])   # relative or not
    assert removed == 2 and dataset.counts == {"cat": 3, "dog": 3, "fox": 4}
    assert files_under(root) == kept                     # no trash left behind


def test_images_that_are_not_the_datasets_are_refused_and_nothing_changes(tmp_path, root):
    pets = import_zip(class_zip(tmp_path / "a.zip"), root, "pets").path
    bugs = import_zip(class_zip(tmp_path / "b.zip", classes=("ant", "bee")), root, "bugs").path
    (pets / "cat" / "link.png").symlink_to(bugs / "ant" / sorted(os.listdir(bugs / "ant"))[0])
    (pets / "cat" / "notes.txt").write_text("not an image")
    first_cat = sorted(os.listdir(pets / "cat"))[0]
    before = files_under(tmp_path)
    for bad in ("../bugs/ant/" + sorted(os.listdir(bugs / "ant"))[0],
                bugs / "ant" / sorted(os.listdir(bugs / "ant"))[0],
                "cat/link.png", "cat/notes.txt", "cat/missing.png", "cat", "owl/1.png", "/etc/passwd"):
        with pytest.raises(DatasetRefused, match="is not an image of pets's classes.*nothing was deleted"):
            remove_images(root, "pets", [f"cat/{first_cat}", bad])          # one bad file refuses them all
    with pytest.raises(DatasetRefused, match="no images were chosen"):
        remove_images(root, "pets", [])
    with pytest.raises(DatasetRefused, match="would leave class fox of pets without images: delete the class"):
        remove_images(root, "pets", [f"fox/{f}" for f in os.listdir(pets / "fox")])
    assert files_under(tmp_path) == before


def test_a_deletion_of_images_that_fails_midway_puts_back_what_moved(tmp_path, root, monkeypatch):
    pets = import_zip(class_zip(tmp_path / "a.zip"), root, "pets").path
    before = files_under(root)
    real_rename, calls = os.rename, []

    def second_fails(source, target):
        calls.append(source)
        if len(calls) == 2:
            raise PermissionError(13, "Permission denied")
        real_rename(source, target)
    monkeypatch.setattr(uploads.os, "rename", second_fails)
    with pytest.raises(DatasetRefused, match="could not delete images of pets: Permission denied; nothing was deleted"):
        remove_images(root, "pets", [f"cat/{f}" for f in sorted(os.listdir(pets / "cat"))[:2]])
    assert files_under(root) == before


def test_a_run_trained_on_a_deleted_dataset_keeps_its_record_and_says_why_it_cannot_be_evaluated(tmp_path, root,
                                                                                                 store, train):
    from core.analysis.evaluate import evaluate_run
    pets = import_zip(class_zip(tmp_path / "a.zip", classes=("dark", "light"), per_class=8), root, "pets").path
    run_id = store.create_run(proposed_config("image-folder", data_path=str(pets), model="mlp", epochs=1,
                                                    image_size=8))
    assert train(store, run_id) == "completed"
    delete_dataset(root, "pets", store)
    [summary] = store.list_runs()
    assert summary.run_id == run_id and summary.state == "completed" and summary.best_value is not None
    assert any(row.get("split") == "val" for row in store.read_metrics(run_id))      # the curves' lines
    with pytest.raises(ValueError, match=f"Folder {pets} does not exist"):
        evaluate_run(store, run_id, "best", "val")


def test_cli_import_data(tmp_path, capsys, monkeypatch):
    from core.__main__ import main
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    runs = tmp_path / "runs"
    source = class_zip(tmp_path / "pets.zip")
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("cat/readme.txt", "not a picture")
    assert main(["import-data", str(source), "--name", "pets", "--runs", str(runs)]) == 3     # one refused
    out, err = capsys.readouterr()
    assert "Imported 12 images into pets" in out and "cat: 4 images" in out
    assert f"--data {runs.resolve() / '.datasets' / 'pets'}" in out
    assert "not imported: cat/readme.txt: not an image" in err
    # bad input: exit 2, one clear line, nothing written
    for argv, message in ((["import-data", str(source), "--name", "pets"], "exists already"),
                          (["import-data", str(source), "--name", "a/b"], "cannot be used"),
                          (["import-data", str(tmp_path / "nope.zip"), "--name", "other"], "does not exist")):
        assert main(argv + ["--runs", str(runs)]) == 2
        assert message in capsys.readouterr().err
    assert os.listdir(runs / ".datasets") == ["pets"]
    assert main(["import-data", str(source), "--name", "pets", "--add", "--runs", str(runs)]) == 3
    assert "Added 12 images to pets" in capsys.readouterr().out


# --- the Datasets page's "Add your own images" -------------------------------------------------------
def _table(at, column):
    """The page's table with this column (AppTest does not expose a dataframe's key)."""
    return next(frame.value for frame in at.dataframe if column in frame.value)


def _uploader(at, label_start):
    return next(u for u in at.get("file_uploader") if u.label.startswith(label_start))


def test_datasets_page_imports_a_zip_and_picks_it(app, tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    source = class_zip(tmp_path / "My Pets.zip", per_class=6)
    with zipfile.ZipFile(source, "a") as archive:
        archive.writestr("cat/notes.txt", "a note, not a picture")
    app.run().switch_page(page_path("datasets")).run()
    no_errors(app)
    assert "MB each" in " ".join(c.value for c in app.caption)          # the upload limit is stated
    _uploader(app, "Zip").set_value(("My Pets.zip", source.read_bytes(), "application/zip"))
    app.button(key="up_import").click().run()
    no_errors(app)
    assert [s.value for s in app.success][0].startswith("Imported 18 images into My-Pets, which now has 3 classes")
    assert _table(app, "added").to_dict("list") == {"class": ["cat", "dog", "fox"],
                                                                   "added": [6, 6, 6], "images": [6, 6, 6]}
    refused = _table(app, "reason")
    assert refused["file"].tolist() == ["cat/notes.txt"] and "not an image" in refused["reason"][0]
    # picked above: the folder checks and the summary describe the new dataset
    folder = tmp_path / "runs" / ".datasets" / "My-Pets"
    assert app.selectbox(key="ds_name").value == "image-folder"
    assert app.text_input(key="ds_path").value == str(folder.resolve())
    assert app.selectbox(key="ds_uploaded").value == "My-Pets"
    assert {m.label: m.value for m in app.metric}["Classes"] == "3"
    assert _table(app, "dataset").to_dict("list") == {"dataset": ["My-Pets"], "classes": [3],
                                                                      "images": [18]}
    # the same zip again under the same name is refused, and nothing changes
    _uploader(app, "Zip").set_value(("My Pets.zip", source.read_bytes(), "application/zip"))
    app.button(key="up_import").click().run()
    assert "exists already" in app.error[0].value and len(list(folder.rglob("*.png"))) == 18


def test_datasets_page_adds_images_per_class(app, tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    app.run().switch_page(page_path("datasets")).run()
    app.text_input(key="up_class_dataset").set_value("faces")
    for class_name, value in (("happy", 20), ("sad", 200)):
        app.text_input(key="up_class").set_value(class_name)
        _uploader(app, "Images of this class").set_value(
            [(f"{i}.png", png(value + i), "image/png") for i in range(5)] + [("broken.png", b"nope", "image/png")])
        app.button(key="up_add_images").click().run()
        no_errors(app)
    assert app.success[0].value.startswith("Added 5 images to faces, which now has 2 classes and 10 images")
    assert _table(app, "reason")["file"].tolist() == ["broken.png"]
    assert {m.label: m.value for m in app.metric}["Classes"] == "2"
    assert app.selectbox(key="ds_uploaded").options == ["faces"]
    # straight to another page with the picker: the dataset picked by the import is picked there
    app.switch_page(page_path("model")).run()
    no_errors(app)
    assert app.selectbox(key="ds_name").value == "image-folder"
    assert app.text_input(key="ds_path").value == str(datasets_dir(tmp_path / "runs") / "faces")
    assert app.selectbox(key="ds_uploaded").value == "faces"


def test_datasets_page_says_what_is_missing(app, monkeypatch):
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    app.run().switch_page(page_path("datasets")).run()
    app.button(key="up_import").click().run()
    assert app.error[0].value == "Choose a zip file first."
    app.button(key="up_add_images").click().run()
    assert app.error[0].value == "Name the dataset first."
    app.text_input(key="up_class_dataset").set_value("bad name")
    _uploader(app, "Images of this class").set_value([("a.png", png(1), "image/png")])
    app.text_input(key="up_class").set_value("cat")
    app.button(key="up_add_images").click().run()
    assert "cannot be used" in app.error[0].value
    assert app.selectbox(key="ds_name").value == "digits"


@pytest.fixture
def bugs_and_pets(tmp_path, monkeypatch):
    """Two uploaded datasets in the runs folder the app fixture uses: bugs (2 classes), pets (3)."""
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    root = datasets_dir(tmp_path / "runs")
    import_zip(class_zip(tmp_path / "a.zip", classes=("ant", "bee")), root, "bugs")
    import_zip(class_zip(tmp_path / "b.zip"), root, "pets")
    return root


def test_the_picker_offers_uploaded_datasets_as_the_folder(app, bugs_and_pets):
    root = bugs_and_pets
    app.run().switch_page(page_path("datasets")).run()
    assert "ds_uploaded" not in [s.key for s in app.selectbox]      # digits needs no folder
    app.selectbox(key="ds_name").select("image-folder").run()
    assert app.selectbox(key="ds_uploaded").options == ["bugs", "pets"]
    assert app.selectbox(key="ds_uploaded").value is None
    app.selectbox(key="ds_uploaded").select("bugs").run()
    no_errors(app)
    assert app.text_input(key="ds_path").value == str(root / "bugs")
    assert {m.label: m.value for m in app.metric}["Classes"] == "2"
    app.text_input(key="ds_path").input(str(root / "pets")).run()      # typing the folder picks it too
    assert app.selectbox(key="ds_uploaded").value == "pets"
    assert {m.label: m.value for m in app.metric}["Classes"] == "3"


def test_datasets_page_deletes_a_dataset_after_asking(app, bugs_and_pets):
    root = bugs_and_pets
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").select("image-folder").run()
    app.selectbox(key="ds_uploaded").select("pets").run()
    assert app.button(key="up_delete").disabled                 # nothing chosen: nothing to confirm
    app.selectbox(key="up_delete_name").select("bugs").run()
    assert any("Delete **bugs** and its 8 images" in m.value for m in app.markdown)
    assert (root / "bugs").is_dir()                             # asked, not yet deleted
    app.button(key="up_delete").click().run()
    no_errors(app)
    assert app.success[0].value.startswith("Deleted bugs and its 8 images.")
    assert not (root / "bugs").exists() and _table(app, "dataset")["dataset"].tolist() == ["pets"]
    # another dataset than the picked one: the pick stays
    assert app.selectbox(key="ds_uploaded").options == ["pets"] and app.selectbox(key="ds_uploaded").value == "pets"
    assert app.selectbox(key="up_delete_name").value is None
    # the picked one: the picker falls back to the default dataset, on this page and the next
    app.selectbox(key="up_delete_name").select("pets").run()
    app.button(key="up_delete").click().run()
    no_errors(app)
    assert app.success[0].value.startswith("Deleted pets and its 12 images.")
    assert os.listdir(root) == [] and "up_delete" not in [b.key for b in app.button]
    assert app.selectbox(key="ds_name").value == "digits"
    assert {m.label: m.value for m in app.metric}["Classes"] == "10"
    app.switch_page(page_path("model")).run()
    no_errors(app)
    assert app.selectbox(key="ds_name").value == "digits"


def test_datasets_page_deletes_one_class_of_the_picked_dataset(app, bugs_and_pets):
    root = bugs_and_pets
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="ds_name").select("image-folder").run()
    app.selectbox(key="ds_uploaded").select("pets").run()
    assert {m.label: m.value for m in app.metric}["Classes"] == "3"
    app.selectbox(key="up_delete_name").select("pets").run()
    assert app.selectbox(key="up_delete_part_pets").options == ["the whole dataset", "class cat (4 images)",
                                                                  "class dog (4 images)", "class fox (4 images)"]
    app.selectbox(key="up_delete_part_pets").select("fox").run()
    assert any("Delete class **fox** of pets and its 4 images" in m.value for m in app.markdown)
    app.button(key="up_delete").click().run()
    no_errors(app)
    assert app.success[0].value.startswith(
        "Deleted class fox of pets and its 4 images; 2 classes and 8 images are left.")
    assert sorted(os.listdir(root / "pets")) == ["cat", "dog"]
    # the dataset stays picked, and the page shows it without the class
    assert app.selectbox(key="ds_uploaded").value == "pets"
    assert {m.label: m.value for m in app.metric}["Classes"] == "2"
    assert _table(app, "dataset").set_index("dataset").loc["pets", "classes"] == 2


def test_datasets_page_deletes_images_picked_in_the_samples_grid(app, bugs_and_pets):
    root = bugs_and_pets

    def picker():
        return [m for m in app.multiselect if m.key.startswith("up_delete_images_picked")]
    app.run().switch_page(page_path("datasets")).run()
    assert picker() == []                                   # digits is no uploaded dataset
    app.selectbox(key="ds_name").select("image-folder").run()
    app.selectbox(key="ds_uploaded").select("pets").run()
    assert app.button(key="up_delete_images").disabled      # nothing picked yet
    cats = sorted((root / "pets" / "cat").iterdir())
    [images] = picker()
    assert images.options == [f"#{i} {path.name}" for i, path in enumerate(cats)]    # the class shown: cat
    images.set_value([str(cats[0]), str(cats[2])]).run()
    assert any("Delete 2 images from **pets**" in m.value for m in app.markdown)
    app.button(key="up_delete_images").click().run()
    no_errors(app)
    assert app.success[0].value == "Deleted 2 images from pets, which now has 10 images."
    assert sorted((root / "pets" / "cat").iterdir()) == [cats[1], cats[3]]
    assert picker()[0].options == [f"#0 {cats[1].name}", f"#1 {cats[3].name}"]        # the grid read afresh
    assert _table(app, "dataset").set_index("dataset").loc["pets", "images"] == 10


def test_datasets_page_refuses_to_delete_what_a_run_trains_on_and_survives_a_deletion_elsewhere(
        app, tmp_path, monkeypatch):
    import time

    from core.runs.states import HOST
    from core.runs.store import RunStore
    monkeypatch.delenv("TRAINBOARD_DATASETS", raising=False)
    root = datasets_dir(tmp_path / "runs")
    pets = import_zip(class_zip(tmp_path / "a.zip"), root, "pets").path
    import_zip(class_zip(tmp_path / "b.zip", classes=("ant", "bee")), root, "bugs")
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run(proposed_config("image-folder", data_path=str(pets), name="on-pets"))
    store.update_status(run_id, state="running", pid=os.getpid(), host=HOST, heartbeat=time.time())
    app.run().switch_page(page_path("datasets")).run()
    app.selectbox(key="up_delete_name").select("pets").run()
    app.button(key="up_delete").click().run()
    no_errors(app)
    assert app.error[0].value.startswith("Nothing was deleted: pets is the data of on-pets")
    assert len(list(pets.rglob("*.png"))) == 12
    store.update_status(run_id, state="completed", pid=None)
    # picked here while another tab or the CLI deletes it: the picker no longer offers it
    app.selectbox(key="ds_name").select("image-folder").run()
    app.selectbox(key="ds_uploaded").select("pets").run()
    delete_dataset(root, "pets", store)
    app.run()
    no_errors(app)
    assert app.selectbox(key="ds_uploaded").options == ["bugs"] and app.selectbox(key="ds_uploaded").value is None
    assert app.selectbox(key="up_delete_name").options == ["bugs"]
