"""What does Trainboard's machinery cost? A bare PyTorch loop against Trainer under JobManager.

Both train the same model on the same in-memory data with the same batch size; the managed run
streams metrics to disk, writes status and heartbeats, checkpoints every epoch and checks the stop
file every batch, in a child process supervised by a JobManager worker thread. The two alternate,
so machine noise hits both. Reported: training samples/s (median over epochs after the first) and
their ratio.

    .venv/bin/python bench/train_overhead.py [--rounds 3] [--epochs 4] [--image-size 32]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.augment import BatchPreprocessor  # noqa: E402
from core.config import RunConfig  # noqa: E402
from core.data import load_dataset  # noqa: E402
from core.jobs import JobManager  # noqa: E402
from core.models import build_model  # noqa: E402
from core.store import RunStore  # noqa: E402


def bare_loop(config: RunConfig, dataset) -> list[float]:
    """The loop a person writes by hand: samples/s of each epoch's training phase."""
    torch.manual_seed(config.seed)
    train = dataset.splits["train"]
    model = build_model(config.model, *dataset.input_shape, len(dataset.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    prep = BatchPreprocessor(dataset.mean, dataset.std)
    rates = []
    for epoch in range(config.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(train))
        for i in range(0, len(order), config.batch_size):
            index = order[i:i + config.batch_size]
            x, y = prep(train.images[index], train=False), train.labels[index]
            loss = F.cross_entropy(model(x), y)
            loss.item()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(order) / (time.perf_counter() - start))
        model.eval()
        with torch.inference_mode():     # validation, as the managed run does
            val = dataset.splits["val"]
            model(prep(val.images, train=False)).argmax(1)
    return rates


def managed_run(config: RunConfig, jobs: JobManager, store: RunStore) -> list[float]:
    run_id = store.create_run(config)
    jobs.submit(run_id)
    if not jobs.wait_idle(timeout=1800):
        raise RuntimeError("managed run did not finish")
    status = store.read_status(run_id)
    if status["state"] != "completed":
        raise RuntimeError(f"managed run {status['state']}: {status.get('error')}")
    return [row["samples_per_s"] for row in store.read_metrics(run_id)
            if row["split"] == "train" and row["kind"] == "epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="simple-cnn")
    args = parser.parse_args()
    config = RunConfig.for_dataset("digits", image_size=args.image_size, epochs=args.epochs,
                                   batch_size=args.batch_size, model=args.model, scheduler="none",
                                   log_interval=5, device="cpu")
    dataset = load_dataset(config)
    print(f"digits {dataset.input_shape}, {len(dataset.splits['train'])} training samples, {args.model}, "
          f"batch {args.batch_size}, {args.epochs} epochs x {args.rounds} rounds, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bare, managed = [], []
    with tempfile.TemporaryDirectory() as runs:
        store = RunStore(runs)
        jobs = JobManager(store, max_concurrent=1)
        try:
            for round_ in range(args.rounds):
                b = bare_loop(config, dataset)[1:]
                m = managed_run(config, jobs, store)[1:]
                bare += b
                managed += m
                print(f"round {round_ + 1}: bare {statistics.median(b):8.0f} samples/s   "
                      f"managed {statistics.median(m):8.0f} samples/s")
        finally:
            jobs.shutdown()
    ratio = statistics.median(managed) / statistics.median(bare)
    print(f"bare loop        {statistics.median(bare):8.0f} samples/s (median of {len(bare)} epochs)")
    print(f"Trainboard run   {statistics.median(managed):8.0f} samples/s (median of {len(managed)} epochs)")
    print(f"ratio managed/bare = {ratio:.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
