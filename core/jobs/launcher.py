"""Starting a run's process: `python -m MODULE ARGS`, or, for several processes, a torchrun process
group (`torchrun --standalone --nproc-per-node N -m MODULE ARGS`), with the log, the environment and
the exit code handled the same way for both. Callers never build a command line themselves.

A process group's own exit code says only that some process failed (torchrun exits 1), so the main
process (rank 0) writes its exit code to a file named in its environment (report_exit), and the
launcher answers with that code: "the lease was taken" (3) means the same from one process or many.
A group killed from outside has no such file and keeps its signal's code.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXIT_FILE_ENV = "TRAINBOARD_EXIT_FILE"
SUPERVISOR_ENV = "TRAINBOARD_SUPERVISOR"   # the pid of the server that started a run's process
WORKER = "core.training.worker"          # trains one run: WORKER RUN_DIR
LR_FINDER = "core.training.lr_find"      # the LR range test behind the Train form: LR_FINDER FOLDER
PREFLIGHT = "core.training.preflight"    # the one-batch check behind the Train form: PREFLIGHT FOLDER
PROJECTOR = "core.analysis.projection"   # a projector map behind the Projector page: PROJECTOR FOLDER


def command(module: str, args: list[str], processes: int = 1) -> list[str]:
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if processes == 1:
        return [sys.executable, "-m", module, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", module, *args]


class Launched:
    """A started process, or process group; `returncode` is its main process's own exit code."""

    def __init__(self, process: subprocess.Popen, exit_file: Path):
        self.process, self.exit_file = process, exit_file
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        code = self.process.poll()
        return None if code is None else self._finished(code)

    def wait(self, timeout: float | None = None) -> int:
        return self._finished(self.process.wait(timeout))

    def kill(self) -> None:
        self.process.kill()

    def _finished(self, code: int) -> int:
        if self.returncode is None:
            try:
                self.returncode = int(self.exit_file.read_text())
            except (OSError, ValueError):
                self.returncode = code        # killed before it could say, or a group's agent killed
            self.exit_file.unlink(missing_ok=True)
        return self.returncode


def launch(module: str, args: list[str], log: Path, processes: int = 1, env: dict | None = None) -> Launched:
    """Start MODULE with ARGS, its stdout and stderr appended to `log` (unbuffered, so the log holds its
    last words even when it is killed); `env` adds to the environment."""
    fd, exit_file = tempfile.mkstemp(prefix="trainboard-exit-")
    os.close(fd)
    os.unlink(exit_file)        # written by the process at its end, read once by Launched
    env = dict(os.environ, **(env or {}), PYTHONUNBUFFERED="1", **{EXIT_FILE_ENV: exit_file},
               PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p))
    with open(log, "ab") as handle:
        process = subprocess.Popen(command(module, [str(a) for a in args], processes), stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return Launched(process, Path(exit_file))


def report_exit(code: int) -> int:
    """Call with the exit code a launched module is about to exit with; returns it. In a process
    group only the main process (rank 0) speaks."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path and os.environ.get("RANK", "0") == "0":
        try:
            Path(path).write_text(str(code))
        except OSError:
            pass         # the launcher then reports the process's own code
    return code


def supervisor_pid() -> int | None:
    """In a launched process: the pid of the server that started it (None: started by hand, the CLI)."""
    value = os.environ.get(SUPERVISOR_ENV, "")
    return int(value) if value.isdigit() else None
