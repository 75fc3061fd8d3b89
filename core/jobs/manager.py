"""JobManager: a queue of runs; worker threads that each supervise a training child process.

One per server, made when the server starts (app.py's lifespan), so its recovery does not wait for a
page view: runs that were waiting in a dead server's queue are queued again, runs whose process died
are marked interrupted, and runs still training in the child of a server that died are followed to
their end, each taking a worker's place (the concurrency limit counts them), and stopped like ours.

The training loop runs in a child process (core.jobs.launcher starts core.training.worker), not in a
thread of this process: inside a Streamlit server a training thread fights the page scripts for the
GIL (DESIGN.md measured 0.075x). Workers only start, watch and stop children and write the run
folder; they never touch the UI.
"""
from __future__ import annotations

import os
import queue
import secrets
import signal
import threading
import time

from core.jobs.folder_job import FolderJob
from core.jobs.launcher import LR_FINDER, PREFLIGHT, PROJECTOR, SUPERVISOR_ENV, WORKER, Launched, launch
from core.runs.lease import ALREADY_RUNNING_EXIT, check_not_running
from core.runs.states import (
    ACTIVE_STATES,
    FAILED,
    HOST,
    INTERRUPTED,
    QUEUED,
    RESUMABLE_STATES,
    RUNNING,
    STOPPED,
    check_transition,
    owner_gone,
    pid_alive,
)
from core.runs.store import RunStore


def default_concurrency() -> int:
    return max(1, int(os.environ.get("TRAINBOARD_MAX_CONCURRENT", "1")))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class JobManager:
    def __init__(self, store: RunStore, max_concurrent: int | None = None, stop_grace_s: float = 30.0,
                 poll_s: float = 0.2):
        self.store = store
        self.max_concurrent = max_concurrent or default_concurrency()
        self.stop_grace_s, self.poll_s = stop_grace_s, poll_s
        # Run ids to start, ("follow", run id, pid) for a dead server's child, None to end a worker.
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._children: dict[str, Launched] = {}
        self._followed: dict[str, int] = {}          # run id -> pid of a child this server did not start
        self._stop_asked_at: dict[str, float] = {}
        self._closed = False
        self.recovered, self.requeued, self.followed = self._recover()
        self._workers = [threading.Thread(target=self._work, name=f"trainboard-worker-{i}", daemon=True)
                         for i in range(self.max_concurrent)]
        for worker in self._workers:
            worker.start()

    def _recover(self) -> tuple[list[str], list[str], list[str]]:
        """At start-up: runs that were training when their process died become 'interrupted' (a person
        decides to resume them); runs that were waiting in a dead server's queue are queued here
        again; runs still training in the child of a dead server are followed, before any queued
        run starts, so they count against the limit."""
        interrupted, requeued, followed = [], [], []
        for run_id, status in self.store.active_runs():
            if owner_gone(status):
                if status["state"] == QUEUED:
                    self.store.update_status(run_id, pid=os.getpid(), host=HOST, attempt=secrets.token_hex(4))
                    requeued.append(run_id)
                else:
                    self.store.update_status(run_id, state=INTERRUPTED, pid=None)
                    interrupted.append(run_id)
            elif self._orphaned_child(status):
                self._queue.put(("follow", run_id, status["pid"]))
                followed.append(run_id)
        for run_id in requeued:
            self._queue.put(run_id)
        return interrupted, requeued, followed

    @staticmethod
    def _orphaned_child(status: dict) -> bool:
        """A run training in a live process on this host that a server started, and that server is
        gone (a run trained from the command line has no supervisor, and another live server's are
        its own)."""
        supervisor = status.get("supervisor")
        return (status["state"] == RUNNING and status.get("host") == HOST and isinstance(supervisor, int)
                and supervisor != os.getpid() and not pid_alive(supervisor))

    def find_lr(self, config) -> FolderJob:
        """Start the learning-rate range test for a (valid) config in a child process: the server
        never imports torch or trains in its own process."""
        return FolderJob(LR_FINDER, config.to_dict(), "LR finder")

    def check(self, config) -> FolderJob:
        """Start the pre-flight check of a (valid) config (one batch through its model) in a child process."""
        return FolderJob(PREFLIGHT, config.to_dict(), "pre-flight check")

    def project(self, run_id: str, checkpoint: str, split: str, method: str) -> FolderJob:
        """Start making a run's projector map (its features first, when not cached) in a child process."""
        payload = {"runs": str(self.store.root.resolve()), "run_id": run_id, "checkpoint": checkpoint,
                   "split": split, "method": method}
        return FolderJob(PROJECTOR, payload, "projector")

    # --- public API (thread-safe) ---------------------------------------------------------------
    def submit(self, run_id: str) -> None:
        """Queue a created (or resumable) run; it starts when a worker is free. Raises UnreadableRun
        (with every problem of its config) or InvalidTransition (LeaseHeld: another process trains
        it), changing nothing."""
        self.store.runnable_config(run_id)
        check_transition(self.store.read_status(run_id)["state"], QUEUED, run_id)
        check_not_running(self.store.lease_path(run_id), run_id)    # its status may be stale
        self.store.stop_path(run_id).unlink(missing_ok=True)
        with self._lock:
            self._stop_asked_at.pop(run_id, None)
            # The attempt token tells this queueing apart from a later one (a quick resume).
            self.store.transition(run_id, QUEUED, pid=os.getpid(), host=HOST, error=None, ended_at=None,
                                  queued_at=time.time(), attempt=secrets.token_hex(4))
        self._queue.put(run_id)

    def resume(self, run_id: str) -> None:
        state = self.store.read_status(run_id)["state"]
        if state not in RESUMABLE_STATES:
            raise RuntimeError(f"run {run_id} is {state}; only {', '.join(sorted(RESUMABLE_STATES))} runs "
                               "can be resumed")
        self.submit(run_id)

    def stop(self, run_id: str) -> None:
        """Ask a run to end: a queued run is stopped at once; a running one ends within one batch
        (the child checks the stop file after every batch), killed if it ignores it for too long."""
        with self._lock:
            if run_id not in self._children and run_id not in self._followed:
                self.store.request_stop(run_id)    # queued: stopped now; running elsewhere: the stop file
                return
            self._stop_asked_at.setdefault(run_id, time.time())
        # The child owns status.json while it runs: it learns of the stop from this file.
        self.store.stop_path(run_id).write_text(str(time.time()))

    def is_busy(self) -> bool:
        with self._lock:
            return bool(self._children) or bool(self._followed) or not self._queue.empty()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if not self.is_busy() and self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.05)
        return False

    def health(self) -> dict:
        """What a supervisor (systemd, a container's health check) asks: is the queue alive, what runs,
        what waits. ok: not shut down, and every worker thread alive."""
        with self._lock:
            running = sorted(self._children) + sorted(self._followed)
        with self._queue.mutex:
            waiting = [item for item in self._queue.queue if isinstance(item, str)]
        queued = []
        for run_id in waiting:       # a run stopped while it waited is skipped when its turn comes
            status = self.store.read_raw_status(run_id) if self.store.exists(run_id) else None
            if isinstance(status, dict) and status.get("state") == QUEUED:
                queued.append(run_id)
        alive = sum(worker.is_alive() for worker in self._workers)
        return {"ok": not self._closed and alive == len(self._workers), "running": len(running),
                "queued": len(queued), "workers": len(self._workers), "workers_alive": alive,
                "running_runs": running, "queued_runs": queued, "runs_folder": str(self.store.root.resolve())}

    def shutdown(self, stop_runs: bool = True, timeout: float | None = None) -> None:
        """End the workers. With stop_runs (a server's shutdown), every run this server trains or
        follows is asked to stop at its next batch and waited for, so it ends 'stopped' and resumable
        and nothing trains unsupervised; queued runs stay queued for the next server."""
        self._closed = True
        if stop_runs:
            with self._lock:
                running = list(self._children) + list(self._followed)
            for run_id in running:
                self.stop(run_id)
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(self.stop_grace_s + 10 if timeout is None else timeout)

    # --- workers ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            run_id = item[1] if isinstance(item, tuple) else item
            try:
                if item is None:
                    return
                if isinstance(item, tuple):
                    self._follow(run_id, item[2])
                elif not self._closed:
                    self._supervise(run_id)
            except Exception as error:   # a broken run folder must not kill the worker thread
                try:
                    self.store.update_status(run_id, state="failed", pid=None, ended_at=time.time(),
                                             error=f"supervisor: {type(error).__name__}: {error}")
                except Exception:
                    pass
            finally:
                self._queue.task_done()

    def _follow(self, run_id: str, pid: int) -> None:
        """Watch a dead server's child that still trains until it ends: its stop is asked and, if
        ignored, forced as for our own; a run it left active is interrupted."""
        with self._lock:
            self._followed[run_id] = pid
        try:
            while pid_alive(pid):
                time.sleep(self.poll_s)
                with self._lock:
                    asked = self._stop_asked_at.get(run_id)
                if asked and time.time() - asked > self.stop_grace_s:
                    os.kill(pid, signal.SIGKILL)
        finally:
            with self._lock:
                self._followed.pop(run_id, None)
                self._stop_asked_at.pop(run_id, None)
        status = self.store.read_raw_status(run_id)
        if isinstance(status, dict) and status.get("state") in ACTIVE_STATES and status.get("pid") == pid:
            self.store.update_status(run_id, state=INTERRUPTED, pid=None, ended_at=time.time(),
                                     error="the training process ended without recording an outcome; resume "
                                           "continues from the last checkpoint")
            self.store.stop_path(run_id).unlink(missing_ok=True)

    def _supervise(self, run_id: str) -> None:
        run_dir = self.store.run_dir(run_id).resolve()
        with self._lock:   # the same lock as stop(): a run stopped while queued never starts
            # A run stopped while queued, or queued twice, is skipped here.
            status = self.store.read_raw_status(run_id)
            if not isinstance(status, dict) or status.get("state") != QUEUED:
                return
            attempt = status.get("attempt")
            child = launch(WORKER, [run_dir], self.store.log_path(run_id), env={SUPERVISOR_ENV: str(os.getpid())})
            self._children[run_id] = child
        # From here until the child exits, the child is the only writer of status.json.
        try:
            while child.poll() is None:
                time.sleep(self.poll_s)
                with self._lock:
                    asked = self._stop_asked_at.get(run_id)
                if asked and time.time() - asked > self.stop_grace_s:
                    child.kill()
                    child.wait()
        finally:
            with self._lock:
                self._children.pop(run_id, None)
                stop_asked = self._stop_asked_at.pop(run_id, None) is not None
        if child.returncode == ALREADY_RUNNING_EXIT:
            return       # another process trains this run (a second server): its status is theirs
        status = self.store.read_raw_status(run_id)
        # The child died without recording an outcome (killed, out of memory, segfault). Another
        # attempt token means the run was already queued again (a quick resume): leave it be.
        if isinstance(status, dict) and status.get("state") in ACTIVE_STATES and status.get("attempt") == attempt:
            code = child.returncode
            if stop_asked:
                outcome, error = STOPPED, None
            elif code < 0:
                outcome = INTERRUPTED
                error = f"the training process was killed by {_signal_name(-code)}; resume continues from " \
                        "the last checkpoint"
            else:
                outcome = FAILED
                error = f"training process exited with code {code}; last log lines: {self._log_tail(run_id)}"
            self.store.update_status(run_id, state=outcome, pid=None, ended_at=time.time(), error=error)
            self.store.stop_path(run_id).unlink(missing_ok=True)

    def _log_tail(self, run_id: str, lines: int = 5) -> str:
        try:
            text = self.store.log_path(run_id).read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
