"""Probes: per-layer weight and gradient statistics and histograms, update-to-weight ratios and dead
ReLU units, recorded while a run trains (ProbeRecorder); read back by core.analysis.insight.read_probes (torch-free).

A step is probed at every `probe_interval` steps and at the last step of every epoch (interval 0:
epoch ends only). Everything is computed on the device, and on a GPU nothing waits for it but the
one host transfer per probe; at other steps nothing runs but one comparison.

probes.jsonl, append-only, one JSON object per probed step (PROBE_FORMAT 1):

    {"format": 1, "time": 1764070000.5, "step": 120, "epoch": 3, "epoch_end": false,
     "lr": 0.002, "bins": 32,
     "layers": {"features.0": {"type": "Conv2d", "params": 144,
                               "weight": STATS, "grad": STATS | null, "update_ratio": 0.0012}, ...},
     "activations": {"features.1": {"zero_frac": 0.41, "dead_frac": 0.0}, ...}}

- layers: every Conv*d and Linear module (module path -> its `weight`), in model order.
- STATS = {"norm", "mean", "std", "min", "max", "zero_frac", "hist"}: hist is `bins` counts of
  equal-width bins from min to max (histogram_edges(STATS) gives the bins + 1 edges); a tensor with
  NaN or inf has those in its min/max/norm and an all-zero hist. std comes from the norm and the sum
  (float32, one pass each): off by up to ~4e-4 of |mean|, nothing for weights and gradients near 0.
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

import math
import time

import torch
from torch import nn

from core.runs.checkpoint import plain_module
from core.runs.streams import JsonLinesWriter
from core.training.hooks import Callback

PROBE_FORMAT = 1
BINS = 32
RAW = 5     # tensor_reductions' values before the bin counts: norm, sum, nonzero count, min, max
PROBED_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
RELU_LIKE = (nn.ReLU, nn.ReLU6)
SIGNIFICANT_DIGITS = 6       # enough for any plot or ratio; keeps a resnet18 record ~13 KB


def is_probed(step: int, index_in_epoch: int, steps_per_epoch: int, interval: int) -> bool:
    """Whether step `step` (counted from 1; the `index_in_epoch`-th batch of its epoch, from 0) is
    probed: every `interval` steps, and the last step of each epoch."""
    return index_in_epoch == steps_per_epoch - 1 or (interval > 0 and step % interval == 0)


def probed_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, PROBED_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def tensor_reductions(x: torch.Tensor, bins: int = BINS) -> torch.Tensor:
    """[norm, sum, nonzero count, min, max, *bin counts] of a tensor, as one float32 tensor on its
    device (counts exact below 2**24 per bin). Nothing here waits for the device, and the arithmetic
    on these values is left to the host (stats_from): on small layers each op's dispatch is the cost,
    not its work. (Weights and gradient as two rows of one call was slower: torch's CPU reductions
    along a dimension take another path, 5-15x slower here.)"""
    x = x.detach().reshape(-1).float()
    lo, hi = torch.aminmax(x)
    # Bins of (x - lo) * scale, in [0, bins]. (A value that is not finite lands anywhere: stats_from
    # drops the histogram of such a tensor.)
    if x.is_cuda:
        # The bounds stay on the device (no host sync), and CUDA's histc counts in shared memory.
        scale = bins / (hi - lo).clamp_min(1e-30)
        counts = torch.histc(torch.addcmul(-lo * scale, x, scale), bins=bins, min=0, max=bins)
    else:
        # On the CPU reading the bounds costs nothing, and bincount of the truncated values is 3x
        # faster than histc.
        low, high = lo.item(), hi.item()
        scale = bins / max(high - low, 1e-30)
        counts = torch.bincount(x.mul(scale).sub_(low * scale).to(torch.int32).clamp_(0, bins - 1), minlength=bins)
    reductions = torch.stack([torch.linalg.vector_norm(x), x.sum(), nonzero_count(x), lo, hi])
    return torch.cat([reductions, counts])


def nonzero_count(x: torch.Tensor) -> torch.Tensor:
    """torch.count_nonzero, 15x faster on CPU for tensors with many zeros (ReLU outputs, their
    gradients), where its branches mispredict; exact below 2**24 values."""
    return x.reshape(-1).sign().abs().sum()


def stats_from(values: list[float], n: int) -> dict:
    """STATS from tensor_reductions' values for a tensor of n elements."""
    norm, total, nonzero, lo, hi = values[:RAW]
    mean = total / n
    finite = math.isfinite(lo) and math.isfinite(hi)
    return {"norm": _round(norm), "mean": _round(mean),
            "std": _round(math.sqrt(max(norm * norm / n - mean * mean, 0.0)) if finite else math.nan),
            "min": _round(lo), "max": _round(hi), "zero_frac": _round(1 - nonzero / n),
            "hist": [int(c) for c in values[RAW:]] if finite else [0] * (len(values) - RAW)}


def tensor_stats(x: torch.Tensor, bins: int = BINS) -> dict:
    """STATS of one tensor (one host transfer; the recorder batches all layers into one instead)."""
    return stats_from(tensor_reductions(x, bins).tolist(), x.numel())


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
        self.activations: list[tuple[str, int, int, torch.Tensor]] = []   # name, values, units, nonzero counts
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
            largest = out.amax(dim=dims)
            counts = torch.stack([out.sign().sum(), largest.sign().sum()])       # nonzero counts, as >= 0
            self.activations.append((name, out.numel(), largest.numel(), counts))
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
        reductions, before, has_grad = [], [], []
        for _, module in self.layers:
            weight, grad = module.weight.detach(), module.weight.grad
            reductions.append(tensor_reductions(weight, self.bins))
            if grad is not None:
                reductions.append(tensor_reductions(grad, self.bins))
            before.append(weight.reshape(-1).clone())       # for the update ratio
            has_grad.append(grad is not None)
        self.pending = {"reductions": reductions, "before": before, "has_grad": has_grad,
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
        weights = [m.weight.detach().reshape(-1) for _, m in self.layers]
        # One call each for all layers (the per-op dispatch, not the arithmetic, dominates small layers).
        updates = torch._foreach_norm(torch._foreach_sub(weights, p["before"])) if weights else []
        parts = [*p["reductions"], *(u.reshape(1) for u in updates), *(counts for *_, counts in p["activations"])]
        values = torch.cat(parts).tolist() if parts else []      # the one host transfer
        width, position = RAW + self.bins, 0

        def read(count: int) -> list[float]:      # the values come back in the order of `parts`
            nonlocal position
            position += count
            return values[position - count:position]

        weight_stats, grad_stats = [], []
        for weight, has_grad in zip(weights, p["has_grad"]):
            weight_stats.append(stats_from(read(width), weight.numel()))
            grad_stats.append(stats_from(read(width), weight.numel()) if has_grad else None)
        layers = {}
        for (name, module), weight, grad in zip(self.layers, weight_stats, grad_stats):
            [update] = read(1)
            ratio = _round(update / weight["norm"]) if weight["norm"] else None
            layers[name] = {"type": type(module).__name__, "params": module.weight.numel(), "weight": weight,
                            "grad": grad, "update_ratio": ratio}
        activations, calls = {}, {}
        for name, size, units, _ in p["activations"]:
            calls[name] = calls.get(name, 0) + 1
            nonzero, alive = read(2)
            activations[name if calls[name] == 1 else f"{name}#{calls[name]}"] = {
                "zero_frac": _round(1 - nonzero / max(size, 1)), "dead_frac": _round(1 - alive / max(units, 1))}
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
