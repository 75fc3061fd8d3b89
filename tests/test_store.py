import json
import subprocess
import time

import pytest

from core.config import RunConfig
from core.runs.layout import InvalidRunId
from core.runs.streams import MetricsReader, truncate_metrics


def test_create_read_and_list(store):
    run_id = store.create_run(RunConfig(name="My First Run!"))
    assert "my-first-run" in run_id
    assert store.read_config(run_id).name == "My First Run!"
    assert store.read_status(run_id)["state"] == "created"
    [summary] = store.list_runs()
    assert (summary.run_id, summary.state, summary.progress) == (run_id, "created", 0.0)


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "", "UPPER", "x" * 200, ".hidden"])
def test_unsafe_run_ids_are_rejected_everywhere(store, bad):
    with pytest.raises(InvalidRunId):
        store.run_dir(bad)
    with pytest.raises(InvalidRunId):
        store.read_status(bad)
    assert not store.exists(bad)


def row(step: int) -> bytes:
    return b'{"split": "train", "kind": "step", "epoch": 1, "step": %d}' % step


def test_metrics_reader_waits_for_a_partial_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(row(1) + b"\n" + row(2) + b"\n" + row(3)[:9])
    reader = MetricsReader(path)
    assert [r["step"] for r in reader.read_new()] == [1, 2]
    assert reader.read_new() == []
    with open(path, "ab") as handle:
        handle.write(row(3)[9:] + b"\n" + row(4) + b"\n")
    assert [r["step"] for r in reader.read_new()] == [3, 4]


def test_truncate_drops_torn_line_and_lost_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\n".join([row(1), row(2), row(3), row(4)[:12]]))
    assert truncate_metrics(path, keep_until_step=2) == 2
    assert path.read_bytes() == row(1) + b"\n" + row(2) + b"\n"


def test_stale_running_runs_become_interrupted(store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    a = store.create_run(RunConfig(name="dead owner"))
    store.update_status(a, state="running", pid=dead.pid, host=__import__("socket").gethostname(),
                        heartbeat=time.time())
    b = store.create_run(RunConfig(name="old heartbeat"))
    store.update_status(b, state="running", pid=None, heartbeat=time.time() - 60)
    c = store.create_run(RunConfig(name="alive"))
    store.update_status(c, state="running", pid=__import__("os").getpid(),
                        host=__import__("socket").gethostname(), heartbeat=time.time())
    assert store.read_status(a)["state"] == "interrupted"
    assert store.read_status(b)["state"] == "interrupted"
    assert store.read_status(c)["state"] == "running"
    assert json.loads((store.run_dir(a) / "status.json").read_text())["state"] == "running"
    # What a starting server recovers: every run written active, the living one included.
    assert sorted(run_id for run_id, status in store.active_runs()) == sorted([a, b, c])
    assert {status["state"] for _, status in store.active_runs()} == {"running"}


def test_delete_refuses_active_runs(store):
    import os
    run_id = store.create_run(RunConfig())
    store.update_status(run_id, state="running", pid=os.getpid(), host=__import__("socket").gethostname(),
                        heartbeat=time.time())
    with pytest.raises(RuntimeError, match="stop it before deleting"):
        store.delete_run(run_id)
    store.update_status(run_id, state="stopped")
    store.delete_run(run_id)
    assert store.run_ids() == []


def test_no_temp_files_are_left_behind(store):
    run_id = store.create_run(RunConfig())
    for i in range(20):
        store.update_status(run_id, step=i)
    assert sorted(p.name for p in store.run_dir(run_id).iterdir()) == ["checkpoints", "config.json", "status.json"]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == [".changes"]


def test_files_carry_their_schema_version(store):
    run_id = store.create_run(RunConfig())
    folder = store.run_dir(run_id)
    assert json.loads((folder / "config.json").read_text())["schema_version"] == 2
    assert json.loads((folder / "status.json").read_text())["schema_version"] == 2


def test_a_config_key_this_version_does_not_know_is_kept_and_reported(store):
    run_id = store.create_run(RunConfig(name="from the future"))
    path = store.run_dir(run_id) / "config.json"
    values = json.loads(path.read_text())
    path.write_text(json.dumps({**values, "schema_version": 7, "warmup_epochs": 3}))
    [summary] = store.list_runs()
    assert (summary.run_id, summary.state, summary.name) == (run_id, "created", "from the future")
    assert summary.notes and "warmup_epochs" in summary.notes[0]
    assert json.loads(path.read_text())["warmup_epochs"] == 3            # never dropped from the file
    assert store.runnable_config(run_id).name == "from the future"       # and the run can still train


@pytest.mark.parametrize("config_text, status_text, reason", [
    ('{"epochs": 3', None, "config.json cannot be read"),
    ('[]', None, "config must be a JSON object"),
    (None, '[]', "status.json must hold a JSON object"),
    (None, '"running"', "status.json must hold a JSON object"),
    (None, '{"state": "running", "heartbeat": "now"}', "heartbeat has the wrong type"),
    (None, '{"state": "paused"}', "unknown state 'paused'"),
    ('{"batch_size": -5, "val_fraction": 0, "device": "tpu"}', None, "batch_size must be >= 1, got -5"),
])
def test_an_unreadable_run_is_listed_with_its_reason(store, config_text, status_text, reason):
    good = store.create_run(RunConfig(name="good"))
    bad = store.create_run(RunConfig(name="bad"))
    if config_text is not None:
        (store.run_dir(bad) / "config.json").write_text(config_text)
    if status_text is not None:
        (store.run_dir(bad) / "status.json").write_text(status_text)
    summaries = {s.run_id: s for s in store.list_runs()}
    assert summaries[good].state == "created"
    assert summaries[bad].state == "unreadable" and reason in summaries[bad].error
    assert store.summary(bad) == summaries[bad]


def test_a_hand_edited_config_lists_every_problem_and_is_never_resumed(store, cli, job_manager):
    from core.runs.status import UnreadableRun
    run_id = store.create_run(RunConfig(name="edited"))
    store.update_status(run_id, state="stopped")
    folder = store.run_dir(run_id)
    config = json.loads((folder / "config.json").read_text())
    config.update(batch_size=-5, val_fraction=0, device="tpu", lr="fast")
    (folder / "config.json").write_text(json.dumps(config))
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    [summary] = store.list_runs()
    assert summary.state == "unreadable"
    for problem in ("batch_size must be >= 1, got -5", "val_fraction must be > 0, got 0",
                    "device must be one of auto, cpu, cuda; got 'tpu'", "lr must be a number, got 'fast'"):
        assert problem in summary.error
    result = cli("resume", run_id, runs=store.root)
    assert result.returncode == 2 and "batch_size must be >= 1" in result.stderr and "'tpu'" in result.stderr
    with pytest.raises(UnreadableRun, match="lr must be a number"):
        job_manager().resume(run_id)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_transitions_are_checked(store):
    from core.runs.states import InvalidTransition
    run_id = store.create_run(RunConfig())
    store.transition(run_id, "queued")
    with pytest.raises(InvalidTransition, match="already queued"):
        store.transition(run_id, "queued")
    store.update_status(run_id, state="completed")
    with pytest.raises(InvalidTransition, match="only failed, interrupted, stopped runs can be resumed"):
        store.transition(run_id, "queued")


def test_summaries_are_cached_until_the_files_change(store, monkeypatch):
    store.listing.ttl_s = 0
    run_id = store.create_run(RunConfig(name="cached"))
    store.update_status(run_id, state="stopped")
    [first] = store.list_runs()
    reads = []
    original = store.listing.read
    monkeypatch.setattr(store.listing, "read", lambda rid: reads.append(rid) or original(rid))
    assert store.list_runs() == [first] and reads == []          # unchanged: not read, not even stat()ed
    store.update_status(run_id, state="failed", error="boom")
    [changed] = store.list_runs()
    assert (changed.state, changed.error, reads) == ("failed", "boom", [run_id])
    store.delete_run(run_id)
    assert store.list_runs() == [] and store.listing.cache == {}


def test_a_file_edited_in_place_is_seen(store):
    from core.runs.summaries import DEEP_CHECK_EVERY
    store.listing.ttl_s = 0
    run_id = store.create_run(RunConfig(name="before"))
    store.list_runs()
    path = store.run_dir(run_id) / "config.json"
    path.write_text(path.read_text().replace('"before"', '"after!"'))    # same folder mtime, same size
    assert store.summary(run_id).name == "after!"                         # one run: checked at once
    other = store.create_run(RunConfig(name="before"))
    store.list_runs()
    path = store.run_dir(other) / "config.json"
    path.write_text(path.read_text().replace('"before"', '"after!"'))
    names = [{s.run_id: s.name for s in store.list_runs()}[other] for _ in range(DEEP_CHECK_EVERY)]
    assert names[-1] == "after!"                                          # every run, within a cycle


def test_a_change_made_by_another_process_is_seen_at_the_next_listing(store):
    from core.runs.store import RunStore
    store.listing.ttl_s = 0
    run_id = store.create_run(RunConfig(name="elsewhere"))
    store.update_status(run_id, state="stopped")
    assert [s.state for s in store.list_runs()] == ["stopped"]
    other = RunStore(store.root)                  # another process: the CLI, a training child
    other.transition(run_id, "queued", pid=None)
    other.update_status(run_id, state="failed", error="boom")
    assert [(s.state, s.error) for s in store.list_runs()] == [("failed", "boom")]
    (store.root / ".changes").unlink()            # a lost journal: every run is checked again
    other.update_status(run_id, state="stopped", error=None)
    (store.root / ".changes").unlink()
    assert [s.state for s in store.list_runs()] == ["stopped"]


def test_a_new_process_starts_from_the_saved_summaries(store, monkeypatch):
    from core.runs.store import RunStore
    kept = store.create_run(RunConfig(name="kept"))
    changed = store.create_run(RunConfig(name="changed"))
    for run_id in (kept, changed):
        store.update_status(run_id, state="stopped")
    store.list_runs()                                 # reads both and saves the summaries
    assert (store.root / ".summaries.json").exists()
    RunStore(store.root).update_status(changed, state="failed", error="while we were away")
    restarted = RunStore(store.root)
    reads = []
    original = restarted.listing.read
    monkeypatch.setattr(restarted.listing, "read", lambda rid: reads.append(rid) or original(rid))
    states = {s.run_id: s.state for s in restarted.list_runs()}
    assert states == {kept: "stopped", changed: "failed"} and reads == [changed]
    (store.root / ".summaries.json").write_text('{"format": 1, "runs": {"x": [1, 2, {"evil": true}]}}')
    assert {s.run_id: s.state for s in RunStore(store.root).list_runs()} == states    # a broken cache: ignored


def test_another_process_s_changes_show_at_once_and_in_the_signature(store):
    """A page rerun because the runs folder changed must list the change, however recent its last
    listing (another tab, the CLI or another server works on the same folder)."""
    from core.runs.store import RunStore
    other = RunStore(store.root)                       # another process's view of the same folder
    first = store.create_run(RunConfig(name="first"))
    assert [s.run_id for s in store.list_runs()] == [first]
    signature = store.change_signature()
    second = other.create_run(RunConfig(name="second"))
    assert store.change_signature() != signature
    assert {s.run_id for s in store.list_runs()} == {first, second}     # within the listing's TTL
    signature = store.change_signature()
    other.delete_run(first)
    assert store.change_signature() != signature
    assert [s.run_id for s in store.list_runs()] == [second]
    signature = store.change_signature()
    other.write_status(second, {**other.read_status(second), "state": "stopped"})
    assert store.change_signature() != signature
    assert store.list_runs()[0].state == "stopped"
