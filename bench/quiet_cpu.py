"""What makes a CPU timing hold still on this shared 2-core VM: one torch thread, and a malloc that
keeps freed memory. Benchmarks call start_quiet() first thing, before torch is imported.

One torch thread: the sides of a comparison share one pinned core. The malloc: with glibc's defaults
a step's large tensors come from fresh mmap'd pages, 13,000-120,000 page faults per epoch here (2-16%
of its CPU time, never the same twice), which made round ratios swing from 0.81 to 1.19
(bench/train_overhead.py).
"""
from __future__ import annotations

import os
import sys

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"}


def start_quiet() -> None:
    """Re-run this script with ENV set (malloc reads it at start-up); child processes inherit it."""
    if any(os.environ.get(key) != value for key, value in ENV.items()):
        os.environ.update(ENV)
        os.execv(sys.executable, [sys.executable, *sys.argv])
