"""Tags and notes per run (annotations.json through the store and the CLI), and what run summaries
carry for the runs table: key settings, test accuracy from the evaluation cache, tags and note."""
import json
import os

import pytest

from conftest import tiny_digits
from core.runs.annotations import BadAnnotation, annotate, read_annotations, set_note, set_tags
from core.runs.derived import evaluation_files
from core.runs.layout import ANNOTATIONS_FILE
from core.runs.status import UnreadableRun
from core.runs.store import RunStore


@pytest.fixture
def run_id(store):
    return store.create_run(tiny_digits(name="annotated"))


def listed(store, run_id):
    store.listing.forget_last()          # as a rerun after the listing's half-second window
    return next(s for s in store.list_runs() if s.run_id == run_id)


def test_tags_and_note_are_kept_and_listed_at_once(store, run_id):
    listed(store, run_id)                                         # the summary is cached
    assert set_tags(store, run_id, add=["baseline", " lr-sweep ", "baseline"]) == ["baseline", "lr-sweep"]
    assert set_tags(store, run_id, add=["best"], remove=["baseline"]) == ["best", "lr-sweep"]
    assert set_note(store, run_id, "  the one to beat\nsecond line ") == "the one to beat\nsecond line"
    assert json.loads(store.annotations_path(run_id).read_text()) == {"tags": ["best", "lr-sweep"],
                                                                     "note": "the one to beat\nsecond line"}
    summary = listed(store, run_id)                # the change journal names the run: re-read, not the cache
    assert summary.tags == ("best", "lr-sweep") and summary.note == "the one to beat\nsecond line"
    other = RunStore(store.root)                   # another process sees them too
    assert listed(other, run_id).tags == ("best", "lr-sweep")
    assert annotate(store, run_id, tags=[], note="")== {"tags": [], "note": ""}
    assert listed(store, run_id).tags == () and listed(other, run_id).note == ""


@pytest.mark.parametrize("tag, reason", [("", "some text"), ("a,b", "comma"), ("x" * 41, "at most 40"),
                                         ("two\nlines", "line break")])
def test_a_bad_tag_changes_nothing(store, run_id, tag, reason):
    set_tags(store, run_id, add=["kept"])
    before = store.annotations_path(run_id).read_bytes()
    with pytest.raises(BadAnnotation, match=reason):
        set_tags(store, run_id, add=["fine", tag])
    with pytest.raises(BadAnnotation, match=reason):
        annotate(store, run_id, tags=["fine", tag], note="not written either")
    assert store.annotations_path(run_id).read_bytes() == before


def test_a_too_long_note_changes_nothing(store, run_id):
    with pytest.raises(BadAnnotation, match="at most 5,000 characters, got 5,001"):
        annotate(store, run_id, tags=["new"], note="x" * 5001)
    assert not store.annotations_path(run_id).exists()


def test_a_broken_annotations_file_is_reported_and_left_alone(store, run_id):
    path = store.run_dir(run_id) / ANNOTATIONS_FILE
    path.write_text('{"tags": "not a list"')
    summary = listed(store, run_id)
    assert summary.state == "created" and summary.tags == ()          # the run itself reads fine
    assert any("annotations.json cannot be read" in note for note in summary.notes)
    with pytest.raises(UnreadableRun, match="annotations.json cannot be read"):
        set_tags(store, run_id, add=["x"])
    assert path.read_text() == '{"tags": "not a list"'


def test_summaries_carry_the_key_settings(store):
    run_id = store.create_run(tiny_digits(batch_size=32, lr=3e-4, optimizer="sgd", aug_flip=True,
                                          aug_rotation=15.0, aug_color_jitter=0.2))
    plain = store.create_run(tiny_digits())
    summary, other = store.summary(run_id), store.summary(plain)
    assert (summary.batch_size, summary.lr, summary.optimizer) == (32, 3e-4, "sgd")
    assert summary.augmentation == "Horizontal flip, Rotation 15, Colour jitter 0.2"
    assert other.augmentation == "none" and other.test_acc is None


def test_saved_summaries_keep_tags_and_an_older_format_is_rebuilt(store, run_id):
    set_tags(store, run_id, add=["kept"])
    listed(store, run_id)
    store.listing.save()
    assert listed(RunStore(store.root), run_id).tags == ("kept",)      # a restarted server, from the saved file
    saved = json.loads((store.root / ".summaries.json").read_text())
    saved["format"] = 1                                               # a file from before tags: not trusted
    for entry in saved["runs"].values():
        entry[2]["tags"] = ["stale"]
    (store.root / ".summaries.json").write_text(json.dumps(saved))
    assert listed(RunStore(store.root), run_id).tags == ("kept",)


def test_test_accuracy_comes_from_the_evaluation_cache_and_goes_stale(store, trained):
    from core.analysis.evaluate import evaluate_run
    assert listed(store, trained).test_acc is None                    # not evaluated: nothing computed here
    evaluate_run(store, trained, "best", "val", device="cpu")
    assert listed(store, trained).test_acc is None                    # val is not test
    report, _ = evaluate_run(store, trained, "best", "test", device="cpu")
    assert listed(store, trained).test_acc == pytest.approx(report["accuracy"])
    best = store.checkpoint_path(trained, "best")                     # a resume rewrites best.pt
    later = evaluation_files(store, trained, "best", "test").path("report").stat().st_mtime_ns + 10**9
    os.utime(best, ns=(later, later))
    store.announce_change(trained)
    assert listed(store, trained).test_acc is None                    # stale: not shown as this checkpoint's


def test_the_run_search_matches_tags(store, run_id):
    from core.runs.summaries import matching_runs
    other = store.create_run(tiny_digits(name="other"))
    set_tags(store, run_id, add=["Baseline", "sweep-7"])
    runs = store.list_runs()
    assert [s.run_id for s in matching_runs(runs, "baseline")] == [run_id]
    assert [s.run_id for s in matching_runs(runs, "SWEEP-7 digits")] == [run_id]       # every word, any field
    assert {s.run_id for s in matching_runs(runs, "")} == {run_id, other}


def test_cli_tag_and_note(cli, store, run_id):
    result = cli("tag", run_id, "--add", "baseline", "--add", "cnn", runs=store.root)
    assert result.returncode == 0 and result.stdout.strip() == f"run {run_id} tags: baseline, cnn"
    result = cli("tag", run_id, "--remove", "cnn", runs=store.root)
    assert result.stdout.strip() == f"run {run_id} tags: baseline"
    assert cli("note", run_id, "first try", runs=store.root).returncode == 0
    assert cli("note", run_id, runs=store.root).stdout == "first try\n"
    shown = json.loads(cli("show", run_id, runs=store.root).stdout)
    assert shown["tags"] == ["baseline"] and shown["note"] == "first try"
    header, row = cli("runs", runs=store.root).stdout.splitlines()[:2]
    assert header.endswith("TAGS") and row.startswith(run_id) and row.endswith("  baseline")
    bad = cli("tag", run_id, "--add", "a,b", runs=store.root)
    assert bad.returncode == 2 and "must not hold a comma" in bad.stderr
    assert read_annotations(store, run_id)["tags"] == ["baseline"]
    missing = cli("note", "no-such-run", "text", runs=store.root)
    assert missing.returncode == 2 and "no run 'no-such-run'" in missing.stderr
