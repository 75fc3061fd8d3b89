"""What do probes cost? Training with ProbeRecorder at the default probe_interval against the same
training without it, both measured in the same run.

Each side is a child process running core.training.trainer.Trainer on digits at its default settings (16x16,
batch 64, 20 steps per epoch, so an epoch-end probe every 20 steps: the most probes per step a
default run makes), the same seed, sample order and model; the only difference is the ProbeRecorder
(writing probes.jsonl to a temp folder). As in bench/train_overhead.py, the two train at the same time
on one pinned core, one torch thread each, with the same malloc settings (bench/quiet_cpu.py), so the
core's drift from second to second hits both; each epoch of the side without probes is paired with
the probing side's rate over the same seconds. Which side starts first alternates by round; each
side's first epoch (warm-up) is dropped.

Two figures per model:
- ratio: samples/s with probes / without, the median of the time-paired ratios (cost = 1 - ratio);
- accounted: the seconds spent inside the recorder's hooks (forward hooks included) over the
  probing side's training time. On a CPU everything a hook starts runs inside it, so this is the
  cost without the pairing's noise.
Also the probes.jsonl size per record, and what it makes for resnet18 over 30 epochs (extrapolated
from the records written here by counting the probed steps with core.training.probes.is_probed).

    .venv/bin/python bench/probe_cost.py [--models simple-cnn,resnet18] [--rounds 3] [--epochs 30,4]
"""
from __future__ import annotations

from quiet_cpu import start_quiet

start_quiet()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def side(model: str, epochs: int, probes: bool, out: Path) -> None:
    """One side, in its own process: train, then write its epochs (and probe accounting) to `out`."""
    import torch

    from core.config import RunConfig
    from core.data.datasets import load_dataset
    from core.runs.streams import JsonLinesWriter
    from core.training.hooks import Callback
    from core.training.probes import ProbeRecorder
    from core.training.trainer import Trainer

    class EpochClock(Callback):
        """(start, end, samples/s) of each epoch's training phase, wall-clock time."""

        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, trainer, rows):
            train, val = rows
            end = time.time() - val["eval_time"]
            self.epochs.append((end - train["epoch_time"], end, train["samples_per_s"]))

    class TimedProbeRecorder(ProbeRecorder):
        """ProbeRecorder, with the seconds spent in its hooks added up."""
        spent = 0.0

        def _timed(name):
            def hook(self, *args):
                start = time.perf_counter()
                getattr(ProbeRecorder, name)(self, *args)
                self.spent += time.perf_counter() - start
            return hook
        on_fit_start = _timed("on_fit_start")
        on_before_optimizer_step = _timed("on_before_optimizer_step")
        on_batch_end = _timed("on_batch_end")
        del _timed

        def _activation_hook(self, name):
            inner = ProbeRecorder._activation_hook(self, name)

            def hook(*args):
                start = time.perf_counter()
                inner(*args)
                self.spent += time.perf_counter() - start
            return hook

    assert torch.get_num_threads() == 1, torch.get_num_threads()
    config = RunConfig.for_dataset("digits", model=model, epochs=epochs, scheduler="none", device="cpu")
    clock = EpochClock()
    callbacks = [clock]
    if probes:
        path = out.with_suffix(".probes.jsonl")
        path.unlink(missing_ok=True)          # the last round's
        recorder = TimedProbeRecorder(JsonLinesWriter(path), config.probe_interval)
        callbacks.append(recorder)
    trainer = Trainer(config, load_dataset(config), callbacks)
    trainer.fit()
    result = {"epochs": clock.epochs, "steps_per_epoch": trainer.state.steps_per_epoch,
              "probe_interval": config.probe_interval}
    if probes:
        recorder.writer.close()
        records = len(path.read_bytes().splitlines())
        result.update(probe_s=recorder.spent, probe_bytes=path.stat().st_size, probe_records=records)
    out.write_text(json.dumps(result))


def rate_during(epochs: list, start: float, end: float) -> float:
    """The rate of `epochs` (start, end, samples/s) over [start, end], weighted by overlap."""
    overlaps = [(min(e, end) - max(s, start), r) for s, e, r in epochs if min(e, end) > max(s, start)]
    return sum(o * r for o, r in overlaps) / sum(o for o, _ in overlaps)


def one_round(model: str, epochs: int, probes_first: bool, folder: Path) -> tuple[dict, dict]:
    """Both sides at once on this process's core; returns (with probes, without) results."""
    outs = {name: folder / f"{model}-{name}.json" for name in ("probes", "off")}
    order = ("probes", "off") if probes_first else ("off", "probes")
    children = [subprocess.Popen([sys.executable, __file__, "--side", name, "--model", model,
                                  "--epochs", str(epochs), "--out", str(outs[name])]) for name in order]
    for child in children:
        if child.wait() != 0:
            sys.exit(f"a {model} side failed (exit {child.returncode})")
    return tuple(json.loads(outs[name].read_text()) for name in ("probes", "off"))


def records_for(steps_per_epoch: int, epochs: int, interval: int) -> int:
    from core.training.probes import is_probed
    return sum(is_probed(step, (step - 1) % steps_per_epoch, steps_per_epoch, interval)
               for step in range(1, steps_per_epoch * epochs + 1))


def compare(model: str, epochs: int, rounds: int) -> None:
    print(f"\n== {model}: digits 16x16, batch 64, {epochs} epochs per side x {rounds} rounds, both at once "
          "on one core", flush=True)
    pairs, shares, sizes = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(rounds):
            with_probes, without = one_round(model, epochs, round_ % 2 == 0, Path(folder))
            timed = with_probes["epochs"][1:]
            first, last = timed[0][0], timed[-1][1]
            inside = [(s, e, r) for s, e, r in without["epochs"][1:] if first <= s and e <= last]
            if not inside:
                sys.exit("no epoch without probes ran wholly within the probing side's timed epochs: "
                         "raise --epochs")
            round_pairs = [rate_during(timed, s, e) / r for s, e, r in inside]
            train_s = sum(e - s for s, e, _ in with_probes["epochs"])
            share = with_probes["probe_s"] / train_s
            pairs += round_pairs
            shares.append(share)
            sizes.append(with_probes["probe_bytes"] / with_probes["probe_records"])
            print(f"round {round_ + 1}: with probes {statistics.median(r for *_, r in timed):6.0f} samples/s, "
                  f"without {statistics.median(r for *_, r in without['epochs'][1:]):6.0f} samples/s; "
                  f"ratio {statistics.median(round_pairs):.3f} ({len(round_pairs)} pairs, "
                  f"{min(round_pairs):.3f}-{max(round_pairs):.3f}); accounted {share:.2%} "
                  f"({with_probes['probe_records']} probes, {with_probes['probe_s']:.2f} s of {train_s:.1f} s); "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    ratio = statistics.median(pairs)
    interval, steps = with_probes["probe_interval"], with_probes["steps_per_epoch"]
    print(f"ratio with/without probes = {ratio:.3f} (median of {len(pairs)} pairs; cost {1 - ratio:.1%}); "
          f"accounted cost {statistics.median(shares):.2%} (median of {rounds} rounds); target <= 2%")
    record = statistics.median(sizes)
    for label, steps_per_epoch in ((f"this run's {steps} steps per epoch", steps),
                                   ("CIFAR-10's 333 steps per epoch at batch 128", 333)):
        count = records_for(steps_per_epoch, 30, interval)
        print(f"probes.jsonl: {record / 1024:.1f} KB per record; 30 epochs at {label}, interval {interval}: "
              f"{count} records, {count * record / 2**20:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="simple-cnn,resnet18")
    parser.add_argument("--epochs", default="30,4", help="per side, one per model; the first is warm-up")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", choices=("probes", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args.model, int(args.epochs), args.side == "probes", args.out)
        return
    models, epochs = args.models.split(","), [int(e) for e in args.epochs.split(",")]
    if len(epochs) != len(models) or min(epochs) < 3:
        parser.error("--epochs: one count of at least 3 per model")
    import torch
    print(f"torch {torch.__version__}, 1 torch thread per side, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cpus)})          # this process and both children
    try:
        for model, count in zip(models, epochs):
            compare(model, count, args.rounds)
    finally:
        os.sched_setaffinity(0, cpus)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
