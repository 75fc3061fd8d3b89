"""Short jobs behind the Train form's buttons (the LR finder, the pre-flight check): a child process
that reads a config from a temp folder, keeps its progress there and leaves its result there. The
server never imports torch or trains in its own process.

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

CONFIG, PROGRESS, RESULT, LOG = "config.json", "progress.json", "result.json", "log"


class FolderJob:
    """A job running in a child process: its progress while it runs, then its result. The folder is
    removed once the result is read."""

    def __init__(self, module: str, config, what: str):
        self.what = what
        self.folder = Path(tempfile.mkdtemp(prefix="trainboard-job-"))
        (self.folder / CONFIG).write_text(config.to_json())
        self.child = launch(module, [self.folder], self.folder / LOG)

    def progress(self) -> tuple[int, int]:
        try:
            progress = json.loads((self.folder / PROGRESS).read_text())
            return progress["done"], progress["total"]
        except (OSError, ValueError, KeyError):
            return 0, 1

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
    """The child's main: `work(config, on_progress)` on FOLDER/config.json, its result (or {"error"})
    in FOLDER/result.json; exits 0, or 1 after an error. The page shows the error; the server is
    never affected."""
    from core.config import read_config_values
    from core.runs.files import atomic_write_json
    folder = Path(argv[0])
    try:
        config = read_config_values(json.loads((folder / CONFIG).read_text()))[0]
        result = work(config, lambda done, total: atomic_write_json(
            folder / PROGRESS, {"done": done, "total": total}, fsync=False))
    except Exception as error:
        result = {"error": f"{type(error).__name__}: {error}"}
    atomic_write_json(folder / RESULT, result)
    sys.exit(report_exit(0 if "error" not in result else 1))
