"""Probes: per-layer weight and gradient statistics and histograms, update-to-weight ratios and dead
ReLU units, recorded while a run trains (ProbeRecorder) and read back (load_probes).

A step is probed at every `probe_interval` steps and at the last step of every epoch (interval 0:
epoch ends only). Everything is computed on the device and read in one host transfer per probe;
nothing runs at other steps except one comparison.

probes.jsonl, append-only, one JSON object per probed step (PROBE_FORMAT 1):

    {"format": 1, "time": 1764070000.5, "step": 120, "epoch": 3, "epoch_end": false,
     "lr": 0.002, "bins": 32,
     "layers": {"features.0": {"type": "Conv2d", "params": 144,
                               "weight": STATS, "grad": STATS | null, "update_ratio": 0.0012}, ...},
     "activations": {"features.1": {"zero_frac": 0.41, "dead_frac": 0.0}, ...}}

- layers: every Conv*d and Linear module (module path -> its `weight`), in model order.
- STATS = {"norm", "mean", "std", "min", "max", "zero_frac", "hist"}: hist is `bins` counts of
  equal-width bins from min to max (histogram_edges(STATS) gives the bins + 1 edges); a tensor with
  NaN or inf has those in its min/max/norm and an all-zero hist.
- weight and grad are taken at the probed step before its optimizer step; grad as the optimizer sees
  it (unscaled, after clipping); null for a layer without a gradient (frozen).
- update_ratio = ||w_after - w_before|| / ||w_before||: the step's whole update (lr, momentum and
  weight decay included) relative to the weights.
- activations: the outputs of every ReLU/ReLU6 module during the probed step's forward pass (training
  mode). zero_frac: share of output values that are 0; dead_frac: share of units (channels of a conv
  output, features of a linear one) that are 0 for every sample and position of the batch. A module
  called twice in one forward (torchvision's BasicBlock.relu) is named "NAME" then "NAME#2".
- step and epoch count from 1, as in metrics.jsonl; a resume drops records past its checkpoint's step
  (store.truncate_probes), so no step repeats.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from core.checkpoint import plain_module
from core.store import JsonLinesWriter, RunStore
from core.trainer import Callback

PROBE_FORMAT = 1
BINS = 32
STATS = ("norm", "mean", "std", "min", "max", "zero_frac")
PROBED_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
RELU_LIKE = (nn.ReLU, nn.ReLU6)
SIGNIFICANT_DIGITS = 6       # enough for any plot or ratio; keeps a resnet18 record ~14 KB


def is_probed(step: int, index_in_epoch: int, steps_per_epoch: int, interval: int) -> bool:
    """Whether step `step` (counted from 1; the `index_in_epoch`-th batch of its epoch, from 0) is
    probed: every `interval` steps, and the last step of each epoch."""
    return index_in_epoch == steps_per_epoch - 1 or (interval > 0 and step % interval == 0)


def probed_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, PROBED_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def tensor_stats(x: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """[norm, mean, std, min, max, zero_frac, *bin counts] of a tensor, as one float32 tensor on its
    device; nothing here waits for the device."""
    x = x.detach().reshape(-1).float()
    n = x.numel()
    lo, hi = torch.aminmax(x)
    norm = torch.linalg.vector_norm(x)
    mean = x.sum() / n
    std = (norm.square() / n - mean.square()).clamp_min(0).sqrt()    # two cheap passes, not Welford's
    zero_frac = 1 - torch.count_nonzero(x) / n
    scale = bins / (hi - lo).clamp_min(1e-30)
    scaled = torch.addcmul(-lo * scale, x, scale)          # (x - lo) * scale, in [0, bins]
    if x.is_cuda:
        # Known bounds: no host sync; CUDA's histc counts in shared memory.
        counts = torch.histc(scaled, bins=bins, min=0, max=bins)
    else:
        # 3x faster than histc on CPU; truncation is floor for these non-negative values.
        counts = torch.bincount(scaled.to(torch.int32).clamp_(0, bins - 1), minlength=bins).float()
    counts = counts * (torch.isfinite(lo) & torch.isfinite(hi))
    return torch.cat([torch.stack([norm, mean, std, lo, hi, zero_frac]), counts])


def histogram_edges(stats: dict) -> list[float]:
    """The bins + 1 edges of a STATS histogram (equal widths from min to max)."""
    bins, lo, hi = len(stats["hist"]), stats["min"], stats["max"]
    return [lo + (hi - lo) * i / bins for i in range(bins + 1)]


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


class ProbeRecorder(Callback):
    """Appends a probe record to probes.jsonl at each probed step (see the module docstring)."""

    def __init__(self, writer: JsonLinesWriter, interval: int, bins: int = BINS):
        self.writer, self.interval, self.bins = writer, interval, bins
        self.layers: list[tuple[str, nn.Module]] = []
        self.relus: list[tuple[str, nn.Module]] = []
        self.hooks: list = []
        self.activations: list[tuple[str, torch.Tensor]] = []
        self.pending: dict | None = None      # the probed step's tensors, between the hooks

    def on_fit_start(self, trainer):
        model = plain_module(trainer.model)
        self.layers = probed_layers(model)
        self.relus = [(name, m) for name, m in model.named_modules() if isinstance(m, RELU_LIKE)]
        self._arm_if_next_probed(trainer)

    def _arm_if_next_probed(self, trainer) -> None:
        """Hooks on the ReLUs for the next step's forward pass, only when that step is probed."""
        s = trainer.state
        index = s.batch_in_epoch if s.batch_in_epoch < s.steps_per_epoch else 0
        if self.hooks or not is_probed(s.step + 1, index, s.steps_per_epoch, self.interval):
            return
        self.activations = []
        self.hooks = [module.register_forward_hook(self._activation_hook(name)) for name, module in self.relus]

    def _activation_hook(self, name: str):
        def hook(module, inputs, output):
            if not module.training:
                return          # validation runs between an epoch's last step and the next epoch's first
            out = output.detach()
            dims = [d for d in range(out.dim()) if d != 1] if out.dim() > 1 else [0]
            # ReLU outputs are >= 0: a unit is dead when its largest output over the batch is 0.
            dead = (out.amax(dim=dims) == 0).float().mean()
            zero = 1 - torch.count_nonzero(out) / max(out.numel(), 1)
            self.activations.append((name, torch.stack([zero, dead])))
        return hook

    def _disarm(self) -> None:
        for handle in self.hooks:
            handle.remove()
        self.hooks = []

    def on_before_optimizer_step(self, trainer):
        self._disarm()
        s = trainer.state
        if not is_probed(s.step + 1, s.batch_in_epoch, s.steps_per_epoch, self.interval):
            return
        weights = [m.weight.detach() for _, m in self.layers]
        self.pending = {
            "weights": [tensor_stats(w, self.bins) for w in weights],
            "grads": [None if w.grad is None else tensor_stats(w.grad, self.bins)
                      for w in (m.weight for _, m in self.layers)],
            "before": [w.clone() for w in weights],
            "activations": self.activations, "lr": trainer.lr,
            "epoch_end": s.batch_in_epoch == s.steps_per_epoch - 1}
        self.activations = []

    def on_batch_end(self, trainer):
        if self.pending is not None:
            self._write(trainer)
            self.pending = None
        self._arm_if_next_probed(trainer)

    def _write(self, trainer) -> None:
        p, s = self.pending, trainer.state
        updates = [torch.linalg.vector_norm(m.weight.detach() - before).reshape(1)
                   for (_, m), before in zip(self.layers, p["before"])]
        parts = [*p["weights"], *(g for g in p["grads"] if g is not None), *updates,
                 *(a for _, a in p["activations"])]
        values = torch.cat(parts).tolist() if parts else []      # the one host transfer
        width, position = len(STATS) + self.bins, 0

        def read(count: int) -> list[float]:      # the values come back in the order of `parts`
            nonlocal position
            position += count
            return values[position - count:position]

        def stats(chunk: list[float]) -> dict:
            named = {key: _round(value) for key, value in zip(STATS, chunk)}
            return {**named, "hist": [int(c) for c in chunk[len(STATS):]]}

        weights = [stats(read(width)) for _ in self.layers]
        grads = [None if g is None else stats(read(width)) for g in p["grads"]]
        layers = {}
        for (name, module), weight, grad in zip(self.layers, weights, grads):
            update = read(1)[0]
            layers[name] = {"type": type(module).__name__, "params": module.weight.numel(), "weight": weight,
                            "grad": grad, "update_ratio": _round(update / weight["norm"]) if weight["norm"] else None}
        activations, calls = {}, {}
        for name, _ in p["activations"]:
            calls[name] = calls.get(name, 0) + 1
            zero, dead = read(2)
            activations[name if calls[name] == 1 else f"{name}#{calls[name]}"] = {
                "zero_frac": _round(zero), "dead_frac": _round(dead)}
        self.writer.write({"format": PROBE_FORMAT, "time": time.time(), "step": s.step, "epoch": s.epoch + 1,
                           "epoch_end": p["epoch_end"], "lr": p["lr"], "bins": self.bins,
                           "layers": layers, "activations": activations})

    def on_epoch_end(self, trainer, rows):
        self.writer.sync()     # before latest.pt (Checkpointer comes after this callback)

    def on_fit_end(self, trainer, outcome):
        self._disarm()
        self.writer.sync()

    def on_exception(self, trainer, error):
        self._disarm()
        self.writer.sync()


def load_probes(store: RunStore, run_id: str) -> tuple[list[dict], str | None]:
    """(every probe record of the run in step order, what is missing): the second is a sentence when
    the run has no probes.jsonl (it predates probes), no record yet, or a model without conv or
    linear layers (records without layers); None when weight and gradient probes are there."""
    path = store.probes_path(run_id)
    if not path.exists():
        return [], (f"run {run_id} has no probes ({path.name} is missing): it was trained before "
                    "Trainboard recorded probes")
    records = store.probe_reader(run_id).read_new()
    if not records:
        return [], f"run {run_id} has no probe records yet (the first is written at the first probed step)"
    if not any(record["layers"] for record in records):
        return records, (f"run {run_id}'s model has no conv or linear layers: its probes hold no weight or "
                         "gradient statistics")
    return records, None
