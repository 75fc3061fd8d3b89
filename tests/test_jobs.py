"""JobManager with real training child processes."""
import time

import pytest

from conftest import tiny_digits
from core.data.folders import proposed_config


def wait_for(predicate, timeout=60.0, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


@pytest.fixture
def jobs(job_manager):
    return job_manager(max_concurrent=1, stop_grace_s=20)


def test_submitted_run_trains_in_a_child_process(store, jobs):
    run_id = store.create_run(tiny_digits(epochs=2))
    jobs.submit(run_id)
    assert store.read_status(run_id)["state"] in ("queued", "running")
    assert jobs.wait_idle(120)
    status = store.read_status(run_id)
    assert status["state"] == "completed", status
    assert status["pid"] is None and status["host"]
    assert len(store.read_metrics(run_id)) > 0


def test_stop_a_running_run(store, jobs):
    run_id = store.create_run(tiny_digits(epochs=500, log_interval=1))
    jobs.submit(run_id)
    wait_for(lambda: store.read_status(run_id)["step"] > 3)
    jobs.stop(run_id)
    asked_at = time.time()
    wait_for(lambda: store.read_status(run_id)["state"] == "stopped", timeout=20)
    assert time.time() - asked_at < 5
    status = store.read_status(run_id)
    assert status["step"] < status["total_steps"]
    assert store.checkpoint_path(run_id, "latest").exists()
    # ... and it can be resumed from there.
    jobs.resume(run_id)
    wait_for(lambda: store.read_status(run_id)["step"] > status["step"])
    jobs.stop(run_id)
    wait_for(lambda: store.read_status(run_id)["state"] == "stopped", timeout=20)


def test_concurrency_one_runs_one_after_the_other(store, jobs):
    first = store.create_run(tiny_digits(epochs=2, name="first"))
    second = store.create_run(tiny_digits(epochs=2, name="second"))
    jobs.submit(first)
    jobs.submit(second)
    states = wait_for(lambda: (store.read_status(first)["state"], store.read_status(second)["state"])
                      if store.read_status(first)["state"] == "running" else None)
    assert states == ("running", "queued")
    assert jobs.wait_idle(120)
    a, b = store.read_status(first), store.read_status(second)
    assert a["state"] == b["state"] == "completed"
    assert b["started_at"] >= a["ended_at"]


def test_stop_a_queued_run_never_starts_it(store, jobs):
    blocker = store.create_run(tiny_digits(epochs=500))
    waiting = store.create_run(tiny_digits(epochs=2))
    jobs.submit(blocker)
    jobs.submit(waiting)
    jobs.stop(waiting)
    assert store.read_status(waiting)["state"] == "stopped"
    jobs.stop(blocker)
    assert jobs.wait_idle(60)
    assert store.read_metrics(waiting) == []
    assert not store.checkpoint_path(waiting, "latest").exists()


def test_a_crashing_child_is_recorded_as_failed(store, jobs, image_folder):
    for png in image_folder.rglob("*.png"):
        png.write_bytes(b"garbage")    # passes the quick check, fails when decoded
    run_id = store.create_run(proposed_config("image-folder", data_path=str(image_folder), batch_size=2))
    jobs.submit(run_id)
    assert jobs.wait_idle(60)
    status = store.read_status(run_id)
    assert status["state"] == "failed" and "could be read" in status["error"]


def test_start_up_marks_orphaned_runs_interrupted(store, job_manager):
    run_id = store.create_run(tiny_digits())
    store.update_status(run_id, state="running", pid=None, heartbeat=time.time() - 30)
    manager = job_manager()
    assert manager.recovered == [run_id]
    assert store.read_raw_status(run_id)["state"] == "interrupted"


def test_resume_refuses_runs_that_are_not_resumable(store, jobs):
    run_id = store.create_run(tiny_digits())
    with pytest.raises(RuntimeError, match="only failed, interrupted, stopped runs can be resumed"):
        jobs.resume(run_id)


def test_health_reports_the_queue_and_a_shut_down_manager_is_not_ok(store, jobs):
    first, second = store.create_run(tiny_digits(epochs=200)), store.create_run(tiny_digits(epochs=1))
    jobs.submit(first)
    jobs.submit(second)
    health = wait_for(lambda: (h := jobs.health())["running"] == 1 and h)
    assert health["ok"] and health["running_runs"] == [first] and health["queued_runs"] == [second]
    assert (health["workers"], health["workers_alive"]) == (1, 1)
    jobs.stop(second)                           # stopped while it waited: no longer counted as queued
    assert wait_for(lambda: jobs.health()["queued"] == 0)
    jobs.shutdown()
    health = jobs.health()
    assert not health["ok"] and health["workers_alive"] == 0 and health["running"] == 0
    assert store.read_status(first)["state"] == "stopped"     # asked to stop at a batch, and waited for
