"""What does Trainboard's machinery cost? A bare PyTorch loop against a Trainer run under JobManager.

Both sides do the same training work: the model from core.models.registry.build_model (same seed), the
in-memory digits data in the same sample order (core.training.trainer.epoch_order), the batch size,
BatchPreprocessor on uint8 batches, AdamW, and on CUDA the same bf16 autocast. Neither reads a value
per step: the bare loop sums loss and accuracy on the device and reads them once per log interval, as
Trainer's IntervalMeter does. Only the managed run pays for Trainboard: a child process started by a
JobManager worker thread, per-step callbacks (stop-file check, meter), a gradient norm, a metrics line
and status.json per log interval, a heartbeat thread, and per-epoch checkpoints (outside the timed
phase). Measured on both sides: samples/s of each epoch's training phase (the managed run's own
`samples_per_s` of its epoch rows in metrics.jsonl; the bare loop times the same span).

Why the CPU figure holds still. On this shared VM a core's speed drifts by 10-25% from one few
seconds to the next (the host's other tenants), so runs taken one after the other, even alternated,
disagreed by that much. Here the two train at the same time, pinned to the same core, one torch thread
each: the scheduler hands out the core in slices of milliseconds, so a slowdown hits both alike.
Each bare epoch run while the managed run trained is paired with the managed rate over the same
seconds; a pair's ratio is the cost per sample, bare over managed, and the drift cancels in it. A
round is one managed run; its first epoch (a fresh process: warm-up) and the bare loop's first are
dropped. Reported: each round's median pair ratio and the median over all pairs. Both processes
also start with malloc settings that take page faults out of the steps (bench/quiet_cpu.py). Each side's
rate is about half what it gets alone, and the managed run's heartbeat thread is charged to it in
full, where alone it would run on the idle second core.

On CUDA the GPU sets the pace, not a drifting core, and two processes sharing a GPU are not timed
fairly, so there the two run one after the other, in alternating order, each round's ratio being
median(managed epochs) / median(bare epochs).

    .venv/bin/python bench/train_overhead.py [--rounds 3] [--epochs 9] [--device auto]

--device auto runs the CPU comparison, then the CUDA one when a GPU is present; cpu / cuda run one.
"""
from __future__ import annotations

import os
import sys

# Both processes start with these (hence the re-exec; the child inherits them). One torch thread each:
# they share one core. And a malloc that keeps freed memory for reuse (see bench/quiet_cpu.py).
from quiet_cpu import start_quiet

start_quiet()

import argparse  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.config import RunConfig  # noqa: E402
from core.data.augment import BatchPreprocessor  # noqa: E402
from core.data.datasets import load_dataset  # noqa: E402
from core.jobs.manager import JobManager  # noqa: E402
from core.models.registry import build_model  # noqa: E402
from core.runs.store import RunStore  # noqa: E402
from core.training.trainer import epoch_order  # noqa: E402


def bare_loop(config: RunConfig, dataset, device: torch.device, more=None) -> list[tuple]:
    """The loop a person writes by hand. Runs config.epochs epochs, or as long as more() is true;
    returns (start, end, samples/s) of each epoch's training phase, wall-clock time.time()."""
    torch.manual_seed(config.seed)
    train, val = dataset.splits["train"].to(device), dataset.splits["val"].to(device)
    model = build_model(config.model, *dataset.input_shape, len(dataset.classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    prep = BatchPreprocessor(dataset.mean, dataset.std, config, device)
    amp = config.mixed_precision != "off" and device.type == "cuda"     # as Trainer decides it
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and dtype == torch.float16)
    epochs, step, epoch = [], 0, 0
    while (more() if more else epoch < config.epochs):
        model.train()
        start, wall = time.perf_counter(), time.time()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        order = epoch_order(len(train), config.seed, epoch)
        for images, labels in train.batches(order, config.batch_size):
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                logits = model(prep(images, train=True))
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach() * len(labels)      # stays on the device: no sync per step
            correct += (logits.argmax(1) == labels).sum()
            step += 1
            if step % config.log_interval == 0:
                loss_sum.item(), correct.item()           # what a log line reads, once per interval
        # The epoch's figures; on a GPU this read waits for the queue, so the time covers the work.
        loss_sum.item(), correct.item()
        elapsed = time.perf_counter() - start
        epochs.append((wall, wall + elapsed, len(order) / elapsed))
        model.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            hits = sum((model(prep(images, train=False)).argmax(1) == labels).sum()
                       for images, labels in val.batches(torch.arange(len(val)), config.batch_size * 4))
        int(hits)     # validation, untimed on both sides; read as Trainer does, which drains a GPU's queue
        epoch += 1
    return epochs


def managed_result(run_id: str, jobs: JobManager, store: RunStore) -> list[tuple]:
    """(start, end, samples/s) of each epoch's training phase of a submitted run, once it is done."""
    if not jobs.wait_idle(timeout=1800):
        raise RuntimeError("managed run did not finish")
    status = store.read_status(run_id)
    if status["state"] != "completed":
        raise RuntimeError(f"managed run {status['state']}: {status.get('error')}")
    rows = [row for row in store.read_metrics(run_id) if row["kind"] == "epoch"]
    train = [row for row in rows if row["split"] == "train"]
    val = {row["epoch"]: row for row in rows if row["split"] == "val"}
    # Both rows of an epoch carry the time they were written, after validation: step back over it.
    ends = [val[row["epoch"]]["time"] - val[row["epoch"]]["eval_time"] for row in train]
    return [(end - row["epoch_time"], end, row["samples_per_s"]) for end, row in zip(ends, train)]


def side_by_side(config, dataset, jobs, store) -> tuple[list[float], list[float], list[float]]:
    """Both at once on this process's one core: the bare loop trains while the managed run does.
    Each bare epoch inside the managed run's timed epochs is paired with the managed rate over the
    same seconds, so the core's drift from second to second cancels in each pair's ratio."""
    run_id = store.create_run(config)
    jobs.submit(run_id)
    bare = bare_loop(config, dataset, torch.device("cpu"), more=jobs.is_busy)
    managed = managed_result(run_id, jobs, store)[1:]
    first, last = managed[0][0], managed[-1][1]
    bare = [(s, e, r) for s, e, r in bare[1:] if first <= s and e <= last]
    if not bare:
        sys.exit("no bare epoch ran wholly within the managed run's timed epochs: raise --epochs")
    pairs = [rate_during(managed, s, e) / r for s, e, r in bare]
    return [r for *_, r in bare], [r for *_, r in managed], pairs


def rate_during(epochs: list[tuple], start: float, end: float) -> float:
    """The rate of `epochs` (start, end, samples/s) over [start, end], weighted by overlap."""
    overlaps = [(min(e, end) - max(s, start), r) for s, e, r in epochs if min(e, end) > max(s, start)]
    return sum(o * r for o, r in overlaps) / sum(o for o, _ in overlaps)


def one_after_the_other(config, dataset, jobs, store, managed_first: bool) -> tuple[list, list, list]:
    def managed():
        run_id = store.create_run(config)
        jobs.submit(run_id)
        return [r for *_, r in managed_result(run_id, jobs, store)[1:]]

    def bare():
        return [r for *_, r in bare_loop(config, dataset, torch.device(config.device))[1:]]

    # Alternate which side goes first, so a slow drift favours neither.
    if managed_first:
        m = managed()
        b = bare()
    else:
        b = bare()
        m = managed()
    return b, m, [statistics.median(m) / statistics.median(b)]


def compare(config: RunConfig, rounds: int, title: str) -> None:
    dataset = load_dataset(config)
    together = config.device == "cpu"
    print(f"\n== {title}: digits {'x'.join(map(str, dataset.input_shape))}, "
          f"{len(dataset.splits['train'])} training samples, {config.model}, batch {config.batch_size}, "
          f"{'bf16 autocast, ' if config.mixed_precision != 'off' and config.device == 'cuda' else ''}"
          f"{config.epochs} epochs per managed run x {rounds} rounds, "
          + ("both at once on one core" if together else "one after the other"))
    bare, managed, ratios = [], [], []
    with tempfile.TemporaryDirectory() as runs:
        store = RunStore(runs)
        jobs = JobManager(store, max_concurrent=1)   # its threads, and so the child, inherit the pin
        try:
            for round_ in range(rounds):
                b, m, pairs = side_by_side(config, dataset, jobs, store) if together else \
                    one_after_the_other(config, dataset, jobs, store, managed_first=round_ % 2 == 1)
                bare += b
                managed += m
                ratios += pairs
                spread = f" (pairs {min(pairs):.3f}-{max(pairs):.3f})" if len(pairs) > 1 else ""
                print(f"round {round_ + 1}: bare {statistics.median(b):6.0f} samples/s ({len(b)} epochs)  "
                      f"managed {statistics.median(m):6.0f} samples/s ({len(m)} epochs)  "
                      f"ratio {statistics.median(pairs):.3f}{spread}  load {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            jobs.shutdown()
    share = " each, sharing one core" if together else ""
    print(f"bare loop       {statistics.median(bare):6.0f} samples/s{share} (median of {len(bare)} epochs)")
    print(f"Trainboard run  {statistics.median(managed):6.0f} samples/s{share} (median of {len(managed)} epochs)")
    print(f"ratio managed/bare = {statistics.median(ratios):.3f} (median of {len(ratios)} "
          f"{'pairs' if together else 'rounds'}; target >= 0.97)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=9, help="per managed run; the first is warm-up")
    parser.add_argument("--image-size", type=int, default=48, help="CPU section (CUDA: 128)")
    args = parser.parse_args()
    if args.epochs < 3:
        parser.error("--epochs must be at least 3: the first is warm-up")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device cuda: no CUDA GPU is available (torch {torch.__version__}, "
                 f"built for CUDA {torch.version.cuda or 'none'}); the CPU section runs with --device cpu")
    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)      # started as the worker is
    if int(child.stdout) != torch.get_num_threads():
        sys.exit(f"torch threads differ: bare loop {torch.get_num_threads()}, managed child {child.stdout}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread in both processes, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    common = dict(scheduler="none", log_interval=5, epochs=args.epochs)
    if args.device in ("auto", "cpu"):
        config = RunConfig.for_dataset("digits", image_size=args.image_size, batch_size=128,
                                       model="simple-cnn", device="cpu", **common)
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(cpus)})      # this thread, and the threads and child it starts
        try:
            compare(config, args.rounds, "CPU")
        finally:
            os.sched_setaffinity(0, cpus)
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        # resnet18 at 128x128, batch 256, bf16: the GPU sets the pace, and both loops' host work
        # hides behind its queue unless something waits for the GPU every step, which would show here.
        config = RunConfig.for_dataset("digits", image_size=128, batch_size=256, model="resnet18",
                                       mixed_precision="bf16", device="cuda", **common)
        compare(config, args.rounds, f"CUDA, {torch.cuda.get_device_name()}")
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
