"""Trainboard's training path on a GPU: against a hand-written loop, across batch sizes, and the fast recipe.

1. Overhead. For resnet18 and simple-cnn on Fashion-MNIST-shaped data (28x28, 1 channel, 10
   classes), a Trainboard run (run_training in this process: metrics, status, probes, checkpoints,
   the stop-file check, everything a run does) against a hand-written loop as a person tuning for
   speed writes it: data on the GPU as uint8, bf16 autocast, channels_last, cudnn.benchmark, loss
   and accuracy summed on the device and read once per epoch (no per-step sync). Same model
   (build_model, same seed), same sample order, batch 128, AdamW, no schedule, no augmentation.
   Alternating in one process, round by round; the first epoch of each side is dropped (cuDNN's
   autotuning). Figure: samples/s of the training epochs; ratio = Trainboard / hand-written.
   Target on one H100: >= 1.00.
2. Throughput of Trainboard runs of resnet18 at 28x28 at batch 128, 512, 2048 and batch_size auto
   (the probe's trials and choice printed). Target: auto >= 4x batch 128.
3. The fast recipe (core.config.RECIPES["fast"]) on real Fashion-MNIST: test accuracy of best.pt
   (core.analysis.evaluate.predict_split, with the recipe's test-time flip) and the wall time of the run.
   Target: >= 95.0% within 120 s.

    python bench/gpu_train.py --data /usr/share/datasets/fashion-mnist [--rounds 3] [--json out.json]
    python bench/gpu_train.py --smoke       # a tiny CPU run of every part: checks the script, no figures
    ... [--parts overhead batch-sizes recipe]  # some of them

Without --data the first two parts use random images in Fashion-MNIST's shape (speed does not depend
on the pixels) and the third is skipped. Without a CUDA GPU it says which figures are missing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from core.analysis.evaluate import predict_split  # noqa: E402
from core.config import RECIPES, RunConfig  # noqa: E402
from core.data.augment import BatchPreprocessor  # noqa: E402
from core.data.datasets import load_dataset  # noqa: E402
from core.models.registry import build_model  # noqa: E402
from core.runs.checkpoint import load_checkpoint  # noqa: E402
from core.runs.store import RunStore  # noqa: E402
from core.training.trainer import epoch_order  # noqa: E402
from core.training.worker import run_training  # noqa: E402

PARTS = ("overhead", "batch-sizes", "recipe")


def write_idx_folder(folder: Path, train: int, test: int, seed: int = 0) -> Path:
    """Random uint8 images and labels as Fashion-MNIST's four IDX files (uncompressed)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (folder / f"{split}-images-idx3-ubyte").write_bytes(
            bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">i4").tobytes() + images.tobytes())
        (folder / f"{split}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + np.array([n], ">i4").tobytes() + labels.tobytes())
    return folder


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def hand_written(config: RunConfig, dataset, device: torch.device) -> list[float]:
    """samples/s of each epoch of the loop a person tuning for speed writes by hand."""
    cuda = device.type == "cuda"
    torch.manual_seed(config.seed)
    torch.backends.cudnn.benchmark = True
    train = dataset.splits["train"].to(device)
    model = build_model(config.model, *dataset.input_shape, len(dataset.classes)).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    prep = BatchPreprocessor(dataset.mean, dataset.std, config, device, channels_last=cuda)
    rates = []
    for epoch in range(config.epochs):
        model.train()
        order = epoch_order(len(train), config.seed, epoch, device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        sync(device)
        start = time.perf_counter()
        for first in range(0, len(order), config.batch_size):
            index = order[first:first + config.batch_size]
            inputs, labels = prep(train.images[index], train=True), train.labels[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(inputs)
                loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(1) == labels).sum()
        float(loss_sum)          # the epoch's one sync
        rates.append(len(order) / (time.perf_counter() - start))
    return rates


def trainboard(store: RunStore, config: RunConfig) -> tuple[list[float], dict, str]:
    """(samples/s of each training epoch, status.json, run id) of a Trainboard run."""
    run_id = store.create_run(config)
    state = run_training(store, run_id, handle_signals=False)
    status = store.read_status(run_id)
    if state != "completed":
        raise SystemExit(f"the Trainboard run {run_id} ended {state}: {status.get('error')}")
    rows = [r for r in store.read_metrics(run_id) if r["split"] == "train" and r["kind"] == "epoch"]
    return [r["samples_per_s"] for r in rows], status, run_id


def steady(rates: list[float]) -> float:
    """Median samples/s without the first epoch (cuDNN autotuning, allocator warm-up)."""
    return statistics.median(rates[1:] if len(rates) > 1 else rates)


def overhead(store, data: str, device, args, report: dict) -> None:
    for model in ("resnet18", "simple-cnn"):
        config = RunConfig.for_dataset("fashion-mnist", data_path=data, model=model, batch_size=128,
                                       epochs=args.epochs, optimizer="adamw", scheduler="none",
                                       mixed_precision="bf16" if device.type == "cuda" else "off",
                                       device=device.type)
        dataset = load_dataset(config)
        ratios, ours, theirs = [], [], []
        for round_ in range(args.rounds):
            sides = ("hand", "trainboard") if round_ % 2 == 0 else ("trainboard", "hand")
            for side in sides:
                if side == "hand":
                    theirs.append(steady(hand_written(config, dataset, device)))
                else:
                    ours.append(steady(trainboard(store, config)[0]))
            ratios.append(ours[-1] / theirs[-1])
            print(f"  {model} round {round_ + 1}: hand-written {theirs[-1]:,.0f} samples/s, "
                  f"Trainboard {ours[-1]:,.0f}, ratio {ratios[-1]:.3f}", flush=True)
        report["overhead"][model] = {"hand_written": statistics.median(theirs),
                                     "trainboard": statistics.median(ours), "ratio": statistics.median(ratios),
                                     "rounds": ratios, "batch_size": 128}
        print(f"{model}, batch 128: ratio {statistics.median(ratios):.3f} (target >= 1.00)", flush=True)


def batch_sizes(store, data: str, device, args, report: dict) -> None:
    sizes = args.batch_sizes + (["auto"] if device.type == "cuda" else [])
    common = dict(data_path=data, model="resnet18", epochs=args.epochs, scheduler="none",
                  mixed_precision="auto", device=device.type)
    for size in sizes:
        rates, status, _ = trainboard(store, RunConfig.for_dataset("fashion-mnist", batch_size=size, **common))
        entry = {"samples_per_s": steady(rates), "batch_size": status["setup"]["batch_size"]}
        if status.get("batch_probe"):
            entry["probe"] = status["batch_probe"]
        report["batch_sizes"][str(size)] = entry
        print(f"resnet18 at 28x28, batch {size}"
              + (f" (chose {entry['batch_size']})" if size == "auto" else "")
              + f": {entry['samples_per_s']:,.0f} samples/s", flush=True)
    base = report["batch_sizes"].get(str(args.batch_sizes[0]))
    if "auto" in report["batch_sizes"] and base:
        gain = report["batch_sizes"]["auto"]["samples_per_s"] / base["samples_per_s"]
        report["auto_over_first"] = gain
        print(f"batch_size auto: {gain:.2f}x batch {args.batch_sizes[0]} (target >= 4x batch 128)", flush=True)


def fast_recipe(store, data: str, device, args, report: dict) -> None:
    overrides = {"data_path": data, "device": device.type}
    if args.smoke:
        overrides.update(epochs=1, batch_size=64)
    config = RECIPES["fast"].config(**overrides)
    started = time.perf_counter()
    _, status, run_id = trainboard(store, config)
    wall = time.perf_counter() - started
    probs, labels, _ = predict_split(load_checkpoint(store.checkpoint_path(run_id, "best")), "test",
                                     device=device.type)
    accuracy = float((probs.argmax(1) == labels).mean())
    report["fast_recipe"] = {"test_accuracy": accuracy, "wall_s": wall,
                             "run_s": status["ended_at"] - status["started_at"], "setup": status["setup"],
                             "config": config.to_dict()}
    print(f"fast recipe: test accuracy {accuracy:.2%} (target >= 95.0%), wall time {wall:.1f} s "
          f"(run {report['fast_recipe']['run_s']:.1f} s; target <= 120 s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="a folder holding Fashion-MNIST's original files (for part 3)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timed run (the first is dropped)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every part (no figures)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("no CUDA GPU here: every figure of this benchmark is missing (run it where a GPU is, or "
              "--smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    if args.smoke:
        args.rounds, args.epochs, args.batch_sizes = 1, 2, [32, 64]
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "overhead": {}, "batch_sizes": {}}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        store = RunStore(scratch / "runs")
        shaped = str(write_idx_folder(scratch / "shaped", *((256, 64) if args.smoke else (60_000, 10_000))))
        data = args.data or shaped
        print(f"{report['device']}, torch {torch.__version__}; data: {args.data or 'random, Fashion-MNIST-shaped'}",
              flush=True)
        if "overhead" in args.parts:
            overhead(store, data, device, args, report)
        if "batch-sizes" in args.parts:
            batch_sizes(store, data, device, args, report)
        if "recipe" in args.parts and (args.data or args.smoke):
            fast_recipe(store, data, device, args, report)
        elif "recipe" in args.parts:
            print("fast recipe: skipped (needs --data with the real Fashion-MNIST)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
