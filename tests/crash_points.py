"""Kill a training process at chosen points of its writes, and check what a kill may never break.

Fault injection lives here, on the tests' side: the child process patches one write site so that
its n-th call ends the process with SIGKILL (no handler runs, as with the OOM killer or a power cut).
Children fork from a forkserver that has imported torch once, so each kill costs a fraction of a
second. Used by tests/test_faults.py and bench/faults.py.
"""
from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import tempfile
from pathlib import Path

# Where a kill lands, in the order an epoch writes: metric lines, latest.pt, best.pt, status.json.
KILL_SITES = ("metrics-partial-line", "after-metrics-sync", "before-checkpoint", "inside-checkpoint",
              "after-checkpoint", "inside-status-write")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(site: str, nth: int) -> None:
    """Patch the write site so that its nth call dies (in this process only: a forked child)."""
    import torch

    import core.runs.files
    import core.runs.layout
    import core.runs.streams
    import core.training.callbacks

    calls = [0]

    def due() -> bool:
        calls[0] += 1
        return calls[0] == nth

    if site == "metrics-partial-line":
        real_write = core.runs.streams.MetricsWriter.write

        def write(self, row):
            if due():
                line = (json.dumps(row, separators=(",", ":")) + "\n").encode()
                self.handle.write(line[:len(line) // 2])
                _die()
            real_write(self, row)
        core.runs.streams.MetricsWriter.write = write
    elif site == "after-metrics-sync":
        real_sync = core.runs.streams.MetricsWriter.sync

        def sync(self):
            real_sync(self)
            if due():
                _die()
        core.runs.streams.MetricsWriter.sync = sync
    elif site in ("before-checkpoint", "after-checkpoint"):
        real_save = core.training.callbacks.save_checkpoint

        def save(state, path):
            if site == "before-checkpoint" and due():
                _die()
            real_save(state, path)
            if site == "after-checkpoint" and due():
                _die()
        core.training.callbacks.save_checkpoint = save
    elif site == "inside-checkpoint":
        real_torch_save = torch.save

        def torch_save(obj, handle, *args, **kwargs):
            if due():
                buffer = io.BytesIO()
                real_torch_save(obj, buffer)
                handle.write(buffer.getvalue()[:buffer.tell() // 2])
                handle.flush()
                _die()
            return real_torch_save(obj, handle, *args, **kwargs)
        torch.save = torch_save
    elif site == "inside-status-write":
        real_atomic = core.runs.files.atomic_write_bytes

        def atomic_write_bytes(path, data, fsync=True):
            if Path(path).name == core.runs.layout.STATUS_FILE and due():
                fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.",
                                         suffix=core.runs.files.TEMP_SUFFIX)
                os.write(fd, data[:len(data) // 2])
                _die()
            real_atomic(path, data, fsync)
        core.runs.files.atomic_write_bytes = atomic_write_bytes
    else:
        raise ValueError(f"unknown kill site {site!r}")


def _train_until_killed(root: str, run_id: str, site: str, nth: int) -> None:
    _install(site, nth)
    from core.runs.store import RunStore
    from core.training.worker import run_training
    state = run_training(RunStore(root), run_id, handle_signals=False)
    os._exit(0 if state in ("completed", "stopped") else 1)


_CONTEXT = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["torch", "core.training.worker", "crash_points"])
    return _CONTEXT


def train_until_killed(root: Path, run_id: str, site: str, nth: int, timeout: float = 120.0) -> int:
    """Train (or resume) the run in a child that dies at the nth call of `site`. Returns the child's
    exit code: -9 when the kill landed, 0 when the run ended first."""
    child = _context().Process(target=_train_until_killed, args=(str(root), run_id, site, nth))
    child.start()
    child.join(timeout)
    if child.exitcode is None:
        child.kill()
        child.join()
        raise TimeoutError(f"the training child did not end within {timeout} s ({site} #{nth})")
    return child.exitcode


def _parsed_lines(path: Path, what: str, problems: list[str]) -> list[dict]:
    """Every line of a JSON Lines file, parsed; a line that does not parse is added to `problems`."""
    parsed = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), 1):
        if line.strip():
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                problems.append(f"{what} line {number} does not parse: {line[:80]!r}")
    return parsed


def check_intact(store, run_id: str, epochs: int) -> list[str]:
    """What a finished run's files get wrong after any number of kills and resumes (empty: nothing).
    Every metrics and probes line parses; each epoch has exactly one train and one val row, in order;
    step rows and probe records never repeat, each epoch has one epoch-end probe; best.pt is the epoch
    status.json calls best, with the best val row's value."""
    from core.runs.checkpoint import load_checkpoint
    problems = []
    rows = _parsed_lines(store.metrics_path(run_id), "metrics", problems)
    for split in ("train", "val"):
        epochs_seen = [r["epoch"] for r in rows if r["split"] == split and r["kind"] == "epoch"]
        if epochs_seen != list(range(1, epochs + 1)):
            problems.append(f"{split} epoch rows {epochs_seen}, expected 1..{epochs} once each")
    steps = [r["step"] for r in rows if r["kind"] == "step"]
    if steps != sorted(set(steps)):
        problems.append(f"step rows repeat or go back: {steps}")
    probes = _parsed_lines(store.probes_path(run_id), "probes", problems)
    probe_steps = [r["step"] for r in probes]
    if probe_steps != sorted(set(probe_steps)):
        problems.append(f"probe records repeat or go back: {probe_steps}")
    probed_epoch_ends = [r["epoch"] for r in probes if r["epoch_end"]]
    if probed_epoch_ends != list(range(1, epochs + 1)):
        problems.append(f"epoch-end probes {probed_epoch_ends}, expected 1..{epochs} once each")
    status = store.read_status(run_id)
    if status["state"] != "completed":
        problems.append(f"state {status['state']} ({status.get('error')})")
    val = {r["epoch"]: r for r in rows if r["split"] == "val" and r["kind"] == "epoch"}
    best_epoch = max(val, key=lambda epoch: (val[epoch]["acc"], -epoch)) if val else None
    best = load_checkpoint(store.checkpoint_path(run_id, "best"))["loop"]
    recorded = (status.get("best") or {}).get("epoch")
    if not (best["epoch"] == recorded == best_epoch):
        problems.append(f"best.pt is epoch {best['epoch']}, status says {recorded}, the val rows {best_epoch}")
    elif best["best_value"] != status["best"]["value"] or abs(status["best"]["value"] - val[best_epoch]["acc"]) > 1e-12:
        problems.append(f"best value: best.pt {best['best_value']}, status {status['best']['value']}, "
                        f"val row {val[best_epoch]['acc']}")
    return problems
