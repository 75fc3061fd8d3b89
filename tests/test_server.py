"""The server owns its life (app.py's st.App): the job queue starts and recovers when the server
starts, with no page opened, and stops when it stops; GET /health reports the queue. Real servers,
killed and stopped as an operator's machine would."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT, free_port, tiny_digits
from core.jobs.launcher import SUPERVISOR_ENV, WORKER, launch
from core.runs.lease import lease_holder
from core.runs.states import HOST, RESUMABLE_STATES

pytestmark = pytest.mark.trains      # every test here trains through a real server's queue


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def queued_by_a_dead_server(store, **settings) -> str:
    """A run waiting in the queue of a server that died (what a kill leaves behind)."""
    run_id = store.create_run(tiny_digits(**settings))
    store.update_status(run_id, state="queued", pid=dead_pid(), host=HOST, attempt="old")
    return run_id


def wait_for(predicate, timeout=180.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met in {timeout:.0f} s")


class Dashboard:
    """`streamlit run app.py` on a runs folder, in a process group of its own (its training children
    are in it too, as under a terminal or systemd)."""

    def __init__(self, runs, log):
        self.port = free_port()
        env = dict(os.environ, TRAINBOARD_RUNS=str(runs), TRAINBOARD_MAX_CONCURRENT="1")
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(self.port),
             "--server.headless", "true"], cwd=ROOT, env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(self.health, 60, "the server's /health")

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())
        except OSError:
            assert self.process.poll() is None, self.log.read_text()
            return None

    def end(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)


@pytest.fixture
def dashboards(tmp_path):
    started = []

    def start(name: str) -> Dashboard:
        started.append(Dashboard(tmp_path / "runs", tmp_path / f"{name}.log"))
        return started[-1]
    yield start
    for dashboard in started:
        dashboard.end()


def test_a_killed_servers_queue_is_taken_up_by_the_next_with_no_page_open(store, dashboards):
    first = queued_by_a_dead_server(store, epochs=1, name="first queued")
    second = queued_by_a_dead_server(store, epochs=1, name="second queued")
    long = queued_by_a_dead_server(store, epochs=500, name="training")      # newest: it starts first
    server = dashboards("killed")
    # The queue started with the server: the long run trains, the two others wait their turn.
    wait_for(lambda: store.read_status(long)["step"] >= 5, what="the long run training")
    health = server.health()
    assert health["ok"] and health["running_runs"] == [long]
    assert sorted(health["queued_runs"]) == sorted([first, second])
    assert health["workers_alive"] == health["workers"] == 1
    os.killpg(server.process.pid, signal.SIGKILL)            # the server and its training child, at once
    server.process.wait(30)
    assert store.read_raw_status(long)["state"] == "running"        # what a kill leaves in the file
    dashboards("restarted")                                          # no page opened, ever
    wait_for(lambda: all(store.read_status(r)["state"] == "completed" for r in (first, second)),
             what="the queued runs completing")
    status = store.read_status(long)
    assert status["state"] == "interrupted" and status["step"] >= 5


def test_sigterm_stops_the_running_run_at_a_batch_and_leaves_it_resumable(store, dashboards):
    run_id = queued_by_a_dead_server(store, epochs=500)
    server = dashboards("stopped")
    wait_for(lambda: store.read_status(run_id)["step"] >= 5, what="the run training")
    server.process.send_signal(signal.SIGTERM)        # to the server alone: its shutdown stops the child
    # uvicorn shuts down gracefully, then ends by the signal it caught, as a process killed by it would.
    assert server.process.wait(90) in (0, -signal.SIGTERM)
    status = store.read_status(run_id)
    assert status["state"] == "stopped" and status["state"] in RESUMABLE_STATES, status
    assert store.checkpoint_path(run_id, "latest").exists()         # the position a resume continues from
    assert lease_holder(store.lease_path(run_id)) is None            # nothing is left training
    assert "stopping 1 run(s) at their next batch" in server.log.read_text()


def test_a_dead_servers_child_still_training_is_followed_and_counts_against_the_limit(store, job_manager):
    """A server killed alone (not its process group) leaves its child training: the next server
    follows it to its end before starting queued runs, and can stop it."""
    orphan = store.create_run(tiny_digits(epochs=500, name="orphan"))
    child = launch(WORKER, [store.run_dir(orphan)], store.log_path(orphan), env={SUPERVISOR_ENV: str(dead_pid())})
    try:
        wait_for(lambda: store.read_status(orphan)["step"] >= 3, what="the orphan training")
        waiting = queued_by_a_dead_server(store, epochs=1, name="waiting")
        manager = job_manager(max_concurrent=1, stop_grace_s=60)
        assert manager.followed == [orphan] and manager.requeued == [waiting]
        time.sleep(1.0)
        health = manager.health()
        assert health["running_runs"] == [orphan] and health["queued_runs"] == [waiting]   # the limit holds
        manager.stop(orphan)
        assert child.wait(60) == 0 and store.read_status(orphan)["state"] == "stopped"
        wait_for(lambda: store.read_status(waiting)["state"] == "completed", what="the queued run completing")
    finally:
        if child.poll() is None:
            child.kill()


def test_a_run_trained_from_the_command_line_is_not_followed(store, job_manager):
    """No supervisor: its own terminal watches it; the server neither counts nor stops it."""
    run_id = store.create_run(tiny_digits(epochs=500))
    child = launch(WORKER, [store.run_dir(run_id)], store.log_path(run_id))     # as `core train` would
    try:
        wait_for(lambda: store.read_status(run_id)["step"] >= 3, what="the run training")
        manager = job_manager(max_concurrent=1)
        assert manager.followed == [] and manager.recovered == [] and manager.health()["running"] == 0
    finally:
        store.stop_path(run_id).write_text("stop")
        child.wait(60)
