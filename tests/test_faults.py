"""Faults a run must survive: kills at every kind of write, a full or read-only disk, a second start
of the same run. Nothing lost, nothing repeated, a clear message, and the run resumes."""
import errno
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

import core.jobs.manager
import core.runs.files
import core.runs.layout
import core.runs.streams
from conftest import ROOT, tiny_digits
from core.runs.checkpoint import load_checkpoint
from core.runs.lease import LeaseHeld, RunLease, lease_holder
from core.runs.states import HOST
from crash_points import KILL_SITES, check_intact, train_until_killed

# Each kill resumes the run where the previous one left it. Together they land in every kind of
# write, several of them where a naive order loses or repeats an epoch or leaves best.pt behind.
KILLS = [("metrics-partial-line", 3), ("after-metrics-sync", 1), ("inside-checkpoint", 1),
         ("after-checkpoint", 1), ("before-checkpoint", 2), ("inside-status-write", 6),
         ("after-checkpoint", 2), ("inside-checkpoint", 2), ("after-metrics-sync", 2)]


def temp_files(store, run_id):
    return sorted(p.name for p in store.run_dir(run_id).rglob(f"*{core.runs.files.TEMP_SUFFIX}"))


def test_kills_at_every_kind_of_write_lose_and_repeat_nothing(store, train):
    assert {site for site, _ in KILLS} == set(KILL_SITES)
    epochs = 8
    run_id = store.create_run(tiny_digits(epochs=epochs, log_interval=5))
    for site, nth in KILLS:
        code = train_until_killed(store.root, run_id, site, nth)
        assert code == -signal.SIGKILL, f"the kill {site} #{nth} did not land (exit code {code})"
        assert store.read_status(run_id)["state"] == "interrupted"
    assert train(store, run_id) == "completed"
    assert check_intact(store, run_id, epochs) == []
    # The half-written checkpoints were cleaned up; a status temp this young could be another
    # process's write in progress, so it waits for a later start.
    assert [name for name in temp_files(store, run_id) if not name.startswith(".status.json.")] == []


def test_a_kill_between_latest_and_best_is_repaired_before_the_resume(store, train):
    run_id = store.create_run(tiny_digits(epochs=2))
    # Epoch 1 is always a new best: its latest.pt is written, then the process dies before best.pt.
    assert train_until_killed(store.root, run_id, "after-checkpoint", 1) == -signal.SIGKILL
    assert not store.checkpoint_path(run_id, "best").exists()
    assert train(store, run_id) == "completed"
    assert check_intact(store, run_id, 2) == []


class FailingFile(io.FileIO):
    """A file whose nth write stores half its bytes, then fails as a full disk does."""
    def __init__(self, path, mode, nth, code):
        super().__init__(path, mode)
        self.nth, self.code, self.calls = nth, code, 0

    def write(self, data):
        self.calls += 1
        if self.calls == self.nth:
            super().write(bytes(data)[:len(data) // 2])
            raise OSError(self.code, os.strerror(self.code))
        return super().write(data)


class FillingDisk:
    """A file with `room` bytes of space left: torch.save meets the OSError mid-write (and, as on a
    real full disk, its zip writer then raises a RuntimeError of its own)."""
    def __init__(self, handle, room, code):
        self.handle, self.room, self.code = handle, room, code

    def write(self, data):
        if len(data) > self.room:
            self.handle.write(bytes(data)[:self.room])
            raise OSError(self.code, os.strerror(self.code))
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self):
        self.handle.flush()


def fail_checkpoint_write(monkeypatch, code):
    real_save, calls = torch.save, [0]

    def save(obj, handle, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:                 # epoch 2's latest.pt fills the disk
            handle = FillingDisk(handle, room=50_000, code=code)
        return real_save(obj, handle, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)


def fail_metrics_write(monkeypatch, code):
    def open_failing(self, path):
        self.path, self.handle = path, FailingFile(path, "ab", nth=7, code=code)     # a line in epoch 2
    monkeypatch.setattr(core.runs.streams.MetricsWriter, "__init__", open_failing)


def fail_status_write(monkeypatch, code):
    real_replace, calls = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        # The training thread's writes only: the heartbeat thread's count with the machine's speed, and
        # it leaves a failed write to the training thread's next one, which a one-off fault never fails.
        if (os.path.basename(dst) == core.runs.layout.STATUS_FILE
                and threading.current_thread() is threading.main_thread()):
            calls[0] += 1
            if calls[0] == 5:
                raise OSError(code, os.strerror(code), str(dst))
        return real_replace(src, dst, *args, **kwargs)
    monkeypatch.setattr(core.runs.files.os, "replace", replace)


def test_a_resume_from_a_damaged_latest_checkpoint_fails_saying_so_and_keeps_the_files(store, capfd, train):
    from test_checkpoint import flip_a_byte_in_the_largest_tensor
    run_id = store.create_run(tiny_digits(epochs=2))
    assert train(store, run_id) == "completed"
    store.write_status(run_id, {**store.read_status(run_id), "state": "interrupted"})   # as after a crash
    latest = store.checkpoint_path(run_id, "latest")
    flip_a_byte_in_the_largest_tensor(latest)
    kept = {path: path.read_bytes() for path in store.run_dir(run_id).rglob("*.pt")}
    lines = store.metrics_path(run_id).read_bytes()
    capfd.readouterr()
    assert train(store, run_id) == "failed"
    error = store.read_status(run_id)["error"]
    assert error.startswith(f"cannot resume: {latest} is not a readable Trainboard checkpoint: it is corrupt")
    assert "Traceback" not in capfd.readouterr().err        # a damaged file, not a bug
    assert {path: path.read_bytes() for path in kept} == kept and store.metrics_path(run_id).read_bytes() == lines


@pytest.mark.parametrize("inject, code, says", [
    (fail_checkpoint_write, errno.ENOSPC, "the disk is full"),
    (fail_metrics_write, errno.EDQUOT, "the disk quota is exceeded"),
    (fail_status_write, errno.EROFS, "the file system is read-only"),
])
def test_a_disk_error_fails_the_run_saying_so_and_resume_works_once_fixed(store, monkeypatch, capsys,
                                                                          inject, code, says, train):
    epochs = 3
    run_id = store.create_run(tiny_digits(epochs=epochs, log_interval=5))
    inject(monkeypatch, code)
    assert train(store, run_id) == "failed"
    status = store.read_status(run_id)
    assert says in status["error"] and "resume" in status["error"]
    assert f"could not write {store.run_dir(run_id)}/" in status["error"]           # names the file
    assert "Traceback" not in capsys.readouterr().err          # the disk, not a bug
    assert temp_files(store, run_id) == []
    lines = store.metrics_path(run_id).read_bytes().splitlines()
    assert lines and all(json.loads(line) for line in lines)   # no torn line, nothing lost
    if store.checkpoint_path(run_id, "latest").exists():
        load_checkpoint(store.checkpoint_path(run_id, "latest"))
    monkeypatch.undo()                                         # space freed
    assert train(store, run_id) == "completed"
    assert check_intact(store, run_id, epochs) == []


def test_a_failed_metrics_write_takes_its_partial_line_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = core.runs.streams.MetricsWriter(path)
    writer.write({"step": 1})
    writer.handle = FailingFile(path, "ab", nth=1, code=errno.ENOSPC)
    with pytest.raises(OSError):
        writer.write({"step": 2, "loss": 0.5})
    assert path.read_bytes() == b'{"step":1}\n'


def test_temp_files_left_by_a_killed_process_are_removed_when_the_run_starts(store, train):
    run_id = store.create_run(tiny_digits(epochs=1))
    run_dir = store.run_dir(run_id)
    orphan_checkpoint = run_dir / "checkpoints" / ".latest.pt.4242.tmp"
    orphan_checkpoint.write_bytes(b"\0" * 4096)
    old_status_temp = run_dir / ".status.json.abcd.tmp"
    old_status_temp.write_text("{")
    os.utime(old_status_temp, (time.time() - 3600,) * 2)
    young_temp = run_dir / ".config.json.efgh.tmp"    # could be another process's write in progress
    young_temp.write_text("{")
    assert train(store, run_id) == "completed"
    assert not orphan_checkpoint.exists() and not old_status_temp.exists()
    assert young_temp.exists()


@pytest.fixture
def lease_holder_process(store):
    """Another process (as a second server's child would) holding a run's lease."""
    processes = []

    def hold(run_id):
        process = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; from core.runs.lease import RunLease; "
             "RunLease(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
             str(store.lease_path(run_id))], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "held"
        processes.append(process)
        return process
    yield hold
    for process in processes:
        process.kill()
        process.wait()


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.name != core.runs.layout.LEASE_FILE}


def test_a_second_start_fails_naming_the_first_and_changes_nothing(store, cli, lease_holder_process, train,
                                                                 job_manager):
    run_id = store.create_run(tiny_digits(epochs=1))
    store.update_status(run_id, state="stopped")        # resumable, as far as status.json knows
    holder = lease_holder_process(run_id)
    before = snapshot(store.run_dir(run_id))
    says = f"run {run_id} is already running on {HOST} pid {holder.pid}"
    with pytest.raises(LeaseHeld, match=says):
        train(store, run_id)
    result = cli("resume", run_id, runs=store.root)
    assert result.returncode == 2 and says in result.stderr
    with pytest.raises(LeaseHeld, match=says):
        job_manager().submit(run_id)
    with pytest.raises(LeaseHeld, match=says):
        store.delete_run(run_id)
    assert snapshot(store.run_dir(run_id)) == before
    holder.kill()
    holder.wait()
    assert lease_holder(store.lease_path(run_id)) is None      # the kernel released it
    assert train(store, run_id) == "completed"


def test_a_lease_is_exclusive_within_one_process_too(tmp_path):
    first = RunLease(tmp_path / "lease", "r1").acquire()
    with pytest.raises(LeaseHeld, match=f"run r1 is already running on {HOST} pid {os.getpid()}"):
        RunLease(tmp_path / "lease", "r1").acquire(wait_s=0.1)
    first.release()
    RunLease(tmp_path / "lease", "r1").acquire(wait_s=0).release()


@pytest.mark.trains     # in two worker processes started by hand, not through a training fixture
def test_two_processes_starting_one_run_train_it_once(store):
    """Two servers' children (or two `resume`s) on one run: the second fails and writes nothing."""
    run_id = store.create_run(tiny_digits(epochs=500))
    command = [sys.executable, "-m", "core.training.worker", str(store.run_dir(run_id))]
    first = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while lease_holder(store.lease_path(run_id)) is None and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, timeout=120)
    assert second.returncode == 3
    assert f"already running on {HOST} pid {first.pid}" in second.stderr
    while store.read_status(run_id)["step"] < 10 and time.time() < deadline:
        time.sleep(0.05)
    store.stop_path(run_id).write_text("stop")
    assert first.wait(120) == 0
    assert store.read_status(run_id)["state"] == "stopped"
    steps = [r["step"] for r in store.read_metrics(run_id) if r["kind"] == "step"]
    assert steps and steps == sorted(set(steps))


def test_a_supervisor_whose_child_finds_the_lease_taken_leaves_the_status_alone(store, lease_holder_process,
                                                                                monkeypatch, job_manager):
    run_id = store.create_run(tiny_digits(epochs=1))
    lease_holder_process(run_id)
    # The race between two servers: the lease was taken just after this server's check passed.
    monkeypatch.setattr(core.jobs.manager, "check_not_running", lambda *_: None)
    manager = job_manager()
    manager.submit(run_id)
    assert manager.wait_idle(120)
    status = store.read_raw_status(run_id)
    assert status["state"] == "queued" and status.get("error") is None
    assert "already running on" in store.log_path(run_id).read_text()


def test_runs_queued_when_their_server_died_are_queued_again(store, job_manager):
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_id = store.create_run(tiny_digits(epochs=1))
    store.update_status(run_id, state="queued", pid=dead.pid, host=HOST, attempt="old")
    manager = job_manager()
    assert manager.requeued == [run_id] and manager.recovered == []
    assert manager.wait_idle(120)
    assert store.read_status(run_id)["state"] == "completed"
