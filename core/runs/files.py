"""Writing run files so that a crash or a full disk never leaves half a file: atomic replaces, the
temp files a killed writer leaves, and the plain sentence for a write the disk refused."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

TEMP_SUFFIX = ".tmp"          # atomic writes go to ".NAME.*.tmp" beside their file first

# Write errors that come from the disk, not from Trainboard: the run fails with a sentence that says
# so and where, and resumes once the disk is fixed.
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only"}


def disk_error(error: BaseException | None) -> OSError | None:
    """The disk error behind `error`, if any: libraries wrap it (torch.save's zip writer raises a
    RuntimeError while handling the OSError of a full disk)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_ERRORS:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_error_message(error: BaseException, where: Path) -> str | None:
    """A plain sentence for a write that failed because of the disk (None for any other error)."""
    error = disk_error(error)
    if error is None:
        return None
    target = error.filename or where
    try:
        free = f"; {shutil.disk_usage(where).free / 2**20:,.1f} MB free there now"
    except OSError:
        free = ""
    return (f"{DISK_ERRORS[error.errno]}: could not write {target}{free}. Free some space (or make the "
            "folder writable) and resume the run: it continues from its last checkpoint")


def temp_path_beside(path: Path) -> Path:
    """A new, empty temp file in `path`'s folder, named so remove_temp_files knows it for a temp."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write to a temp file in the same folder, then os.replace: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, 0o644)   # mkstemp makes 0600; run files are meant to be shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, value, fsync: bool = True) -> None:
    atomic_write_bytes(path, json.dumps(value, indent=1, sort_keys=True).encode(), fsync=fsync)


def remove_temp_files(folder: Path, older_than_s: float) -> list[Path]:
    """Delete the temp files in `folder` that are at least `older_than_s` old (0: every one)."""
    removed = []
    for path in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        try:
            if time.time() - path.stat().st_mtime >= older_than_s:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass
    return removed
