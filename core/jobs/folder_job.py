"""Short jobs behind the pages' buttons (the LR finder, the pre-flight check, a projector's map): a
child process that reads what to do from a temp folder (a JSON payload), keeps its progress there and
leaves its result there. The server never imports torch or trains in its own process.

The parent's side is FolderJob (progress, done, result); the child's is run_folder_job, which a
module's main calls with the work to do.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from core.jobs.launcher import launch, report_exit

PAYLOAD, PROGRESS, RESULT, LOG = "payload.json", "progress.json", "result.json", "log"


class FolderJob:
    """A job running in a child process: its progress while it runs, then its result. The folder is
    removed once the result is read."""

    def __init__(self, module: str, payload: dict, what: str):
        self.what = what
        self.folder = Path(tempfile.mkdtemp(prefix="trainboard-job-"))
        (self.folder / PAYLOAD).write_text(json.dumps(payload))
        self.child = launch(module, [self.folder], self.folder / LOG)

    def progress(self) -> tuple[int, int, str]:
        """(done, total, what it is doing now: "" when the job says nothing more)."""
        try:
            progress = json.loads((self.folder / PROGRESS).read_text())
            return progress["done"], progress["total"], progress.get("stage", "")
        except (OSError, ValueError, KeyError):
            return 0, 1, ""

    def done(self) -> bool:
        return self.child.poll() is not None

    def result(self) -> dict:
        """The job's result or {"error": ...}; call once done()."""
        try:
            result = json.loads((self.folder / RESULT).read_text())
        except (OSError, ValueError):
            log = self.folder / LOG
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            result = {"error": f"the {self.what} ended with code {self.child.returncode}: {' | '.join(tail)}"}
        shutil.rmtree(self.folder, ignore_errors=True)
        return result


def run_folder_job(argv: list[str], work: Callable) -> None:
    """The child's main: `work(payload, on_progress)` on FOLDER/payload.json, where on_progress(done,
    total, stage="") reports; its result (or {"error"}) in FOLDER/result.json; exits 0, or 1 after an
    error. The page shows the error; the server is never affected."""
    from core.runs.files import atomic_write_json
    folder = Path(argv[0])

    def on_progress(done: int, total: int, stage: str = "") -> None:
        atomic_write_json(folder / PROGRESS, {"done": done, "total": total, "stage": stage}, fsync=False)
    try:
        result = work(json.loads((folder / PAYLOAD).read_text()), on_progress)
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"}
    atomic_write_json(folder / RESULT, result)
    sys.exit(report_exit(0 if "error" not in result else 1))
