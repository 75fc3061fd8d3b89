"""Faults survived, counted: damaged image files decoded, training processes killed at every kind of
write, disk errors injected (and a real full disk where a tmpfs can be mounted). Prints how many of
each, and how many lost or repeated anything (the target is zero everywhere).

    .venv/bin/python bench/faults.py [--files 5000] [--kills-per-site 4]
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pytest  # noqa: E402  (its MonkeyPatch undoes the injected faults)

from conftest import tiny_digits  # noqa: E402
from core.data.images import ImageRefused, decode  # noqa: E402
from core.runs.files import DISK_ERRORS  # noqa: E402
from core.runs.store import RunStore  # noqa: E402
from core.training.worker import run_training  # noqa: E402
from crash_points import KILL_SITES, check_intact, train_until_killed  # noqa: E402


@contextlib.contextmanager
def quiet_c_stderr():
    """libtiff writes its warnings straight to file descriptor 2."""
    saved = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fuzz_images(count: int, seed: int = 0) -> dict:
    """Truncated, bit-flipped and spliced copies of real files of every format PIL writes here."""
    from test_images import REAL
    rng, names = random.Random(seed), sorted(REAL)
    outcome = {"decoded": 0, "refused": 0, "raised": 0}
    for _ in range(count):
        data = REAL[rng.choice(names)]
        damage = rng.choice(("truncate", "flip", "splice"))
        if damage == "truncate":
            data = data[:rng.randrange(len(data))]
        elif damage == "flip":
            flipped = bytearray(data)
            for _ in range(rng.randint(1, 6)):
                index = rng.randrange(min(len(data), 64)) if rng.random() < 0.5 else rng.randrange(len(data))
                flipped[index] ^= 1 << rng.randrange(8)
            data = bytes(flipped)
        else:
            other = REAL[rng.choice(names)]
            data = data[:rng.randint(0, len(data))] + other[rng.randint(0, len(other)):]
        try:
            decode(data, 16, rng.choice((1, 3)))
            outcome["decoded"] += 1
        except ImageRefused:
            outcome["refused"] += 1
        except Exception:
            outcome["raised"] += 1
    return outcome


def kill_runs(root: Path, per_site: int, epochs: int = 6) -> dict:
    """One run per kill site, killed at its 1st, 2nd, ... call of that write, resumed each time."""
    store = RunStore(root)
    landed = broken = 0
    for site in KILL_SITES:
        run_id = store.create_run(tiny_digits(epochs=epochs, log_interval=5))
        for nth in range(1, per_site + 1):
            landed += train_until_killed(store.root, run_id, site, nth) < 0
        run_training(store, run_id, handle_signals=False)
        problems = check_intact(store, run_id, epochs)
        if problems:
            broken += 1
            print(f"  {site}: {problems}")
    return {"kills landed": landed, "runs": len(KILL_SITES), "runs that lost or repeated anything": broken}


def injected_disk_errors(root: Path) -> dict:
    from test_faults import fail_checkpoint_write, fail_metrics_write, fail_status_write
    store = RunStore(root)
    injected = named = intact = 0
    for inject in (fail_checkpoint_write, fail_metrics_write, fail_status_write):
        for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            run_id = store.create_run(tiny_digits(epochs=3, log_interval=5))
            with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(io.StringIO()):
                inject(patch, code)
                run_training(store, run_id, handle_signals=False)
            injected += 1
            status = store.read_status(run_id)
            named += status["state"] == "failed" and any(says in status["error"] for says in DISK_ERRORS.values())
            run_training(store, run_id, handle_signals=False)
            intact += not check_intact(store, run_id, 3)
    return {"disk errors injected": injected, "failed saying why": named, "resumed intact": intact}


def real_full_disk() -> str:
    """A 3 MB tmpfs, filled so that epoch 2's checkpoint does not fit (needs root)."""
    mount = Path(tempfile.mkdtemp(prefix="trainboard-full-"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        mount.rmdir()
        return f"skipped (cannot mount a tmpfs here: {done.stderr.strip() or done.returncode})"
    try:
        (mount / "filler").write_bytes(b"\0" * (1800 * 1024))
        store = RunStore(mount / "runs")
        run_id = store.create_run(tiny_digits(epochs=3, image_size=8, batch_size=64))
        with contextlib.redirect_stderr(io.StringIO()):
            state = run_training(store, run_id, handle_signals=False)
        error = store.read_status(run_id)["error"] or ""
        temps = list(store.run_dir(run_id).rglob("*.tmp"))
        (mount / "filler").unlink()                      # space freed
        resumed = run_training(store, run_id, handle_signals=False)
        problems = check_intact(store, run_id, 3)
        return (f"{state} ({error.split(':')[0]}), {len(temps)} temp files left, resume {resumed}, "
                f"{'intact' if not problems else problems}")
    finally:
        subprocess.run(["umount", str(mount)])
        mount.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--kills-per-site", type=int, default=4)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        with quiet_c_stderr():
            fuzzed = fuzz_images(args.files)
        print(f"damaged image files: {args.files:,} -> {fuzzed}")
        print(f"kills: {kill_runs(Path(scratch) / 'kills', args.kills_per_site)}")
        print(f"disk errors: {injected_disk_errors(Path(scratch) / 'disk')}")
        print(f"real full disk: {real_full_disk()}")
        print(f"({time.perf_counter() - start:.0f} s on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
