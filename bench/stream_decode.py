"""A folder too large for memory: how fast DataLoader workers decode it, and what a run streaming it
trains at against the same folder held in memory (core.data.datasets.StreamingSplit against MemorySplit).

    .venv/bin/python bench/stream_decode.py [--images 4000] [--size 64] [--rounds 3] [--workers 0 1 2]

Part 1 decodes the whole folder through StreamingSplit.batches (shuffled, as training reads it) with
each number of workers, alternating the order round by round; the baseline is 0 workers (decoding in
the training process), measured in the same rounds. Part 2 trains simple-cnn for two epochs on the
folder streamed with the default workers and held in memory, and reports the second epoch's samples/s
and the share of it spent waiting for batches (the epoch row's data_wait_s). The images are photo-like
JPEGs (256x256 RGB, smooth shapes and noise), resized to --size as a person's photos are.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import core.data.datasets  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data.datasets import StreamingSplit  # noqa: E402
from core.data.folders import list_folder  # noqa: E402
from core.runs.store import RunStore  # noqa: E402
from core.training.worker import run_training  # noqa: E402

CLASSES = 10
PHOTO_SIDE = 256
BATCH = 128


def make_folder(root: Path, images: int) -> None:
    """Photo-like JPEGs: a class-coloured gradient with a bright disc and noise (JPEG's cost depends
    on the content; random noise would be unlike photos, flat colour far cheaper)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:PHOTO_SIDE, 0:PHOTO_SIDE].astype(np.float32) / PHOTO_SIDE
    for c in range(CLASSES):
        (root / f"class{c}").mkdir(parents=True)
    for i in range(images):
        c = i % CLASSES
        cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.float32)
        channels = [(xx * (c + 1) / CLASSES + yy * k / 3 + disc * 0.5) % 1.0 for k in range(3)]
        pixels = np.stack(channels, -1) * 220 + rng.normal(0, 8, (PHOTO_SIDE, PHOTO_SIDE, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(
            root / f"class{c}" / f"{i}.jpg", quality=90)


def decode_rate(files: list[str], labels: list[int], size: int, workers: int) -> float:
    """Images per second through a streamed split's batches, every file once, shuffled."""
    split = StreamingSplit(files, labels, size, 3, workers)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    seen = sum(len(y) for _, y in split.batches(order, BATCH))
    elapsed = time.perf_counter() - start
    assert seen == len(files), (seen, len(files))
    return seen / elapsed


def decoding(root: Path, size: int, worker_counts: list[int], rounds: int) -> None:
    listing = list_folder(RunConfig.for_dataset("image-folder", data_path=str(root), image_size=size, channels=3))
    files, labels = listing.files, listing.labels
    rates = {w: [] for w in worker_counts}
    for r in range(rounds):
        for workers in (worker_counts if r % 2 == 0 else worker_counts[::-1]):
            rates[workers].append(decode_rate(files, labels, size, workers))
        print(f"  round {r + 1}: " + ", ".join(f"{w} workers {rates[w][-1]:,.0f}/s" for w in worker_counts),
              flush=True)
    base = worker_counts[0]
    for workers in worker_counts:
        ratios = [a / b for a, b in zip(rates[workers], rates[base])]
        print(f"decode {len(files):,} {PHOTO_SIDE}px JPEGs to {size}x{size}, {workers} workers: "
              f"median {statistics.median(rates[workers]):,.0f} images/s, "
              f"{statistics.median(ratios):.2f}x {base} workers", flush=True)


def training(root: Path, size: int, device: str) -> None:
    """Two epochs of simple-cnn on the folder, streamed and in memory: the second epoch's row."""
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs")
        rows = {}
        for how, limit in (("streamed", 0), ("in memory", 2 * 1024**3)):
            core.data.datasets.IN_MEMORY_LIMIT_BYTES = limit
            config = RunConfig.for_dataset("image-folder", data_path=str(root), image_size=size, channels=3,
                                           model="simple-cnn", epochs=2, batch_size=BATCH, device=device,
                                           name=how)
            run_id = store.create_run(config)
            started = time.perf_counter()
            assert run_training(store, run_id, handle_signals=False) == "completed", store.read_status(run_id)
            wall = time.perf_counter() - started
            status = store.read_status(run_id)
            assert ("input_pipeline" in status) == (how == "streamed"), status   # only a streamed run has one
            epochs = [row for row in store.read_metrics(run_id) if row.get("kind") == "epoch"
                      and row.get("split") == "train"]
            rows[how] = epochs[-1]
            print(f"{how:>9}: epoch 2 {epochs[-1]['samples_per_s']:,.0f} samples/s, waiting for batches "
                  f"{epochs[-1]['data_wait_s'] / epochs[-1]['epoch_time']:.0%} of it; whole run {wall:.1f} s "
                  f"({status.get('input_pipeline', 'in memory')})", flush=True)
        print(f"streamed / in memory: {rows['streamed']['samples_per_s'] / rows['in memory']['samples_per_s']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=64, help="the image size trained at")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "no GPU"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, {gpu}")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "photos"
        start = time.perf_counter()
        make_folder(root, args.images)
        print(f"made {args.images:,} {PHOTO_SIDE}x{PHOTO_SIDE} JPEGs in {time.perf_counter() - start:.1f} s",
              flush=True)
        decoding(root, args.size, args.workers, args.rounds)
        training(root, args.size, args.device)


if __name__ == "__main__":
    main()
