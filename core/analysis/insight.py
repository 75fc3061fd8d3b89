"""Probe records (probes.jsonl, see core.training.probes) shaped for the Insight page: per-layer series over
steps, histograms over time on shared bins, and the layers that move most. NumPy only: the page
never imports torch."""
from __future__ import annotations

import numpy as np

from core.runs.store import RunStore

PARTS = ("weight", "grad")


def read_probes(store: RunStore, run_id: str) -> tuple[list[dict], str | None]:
    """(every probe record of the run in step order, what is missing): the second is a sentence when
    the run has no probes.jsonl (it predates probes), no record yet, or a model without conv or
    linear layers; None when weight and gradient probes are there."""
    records = [record for record in store.probe_reader(run_id).read_new() if "__reset__" not in record]
    return records, missing_probes(store, run_id, records)


def missing_probes(store: RunStore, run_id: str, records: list[dict]) -> str | None:
    """What the run's probe records lack, in a sentence, or None when weight and gradient probes
    are there."""
    path = store.probes_path(run_id)
    if not records and not path.exists():
        return (f"run {run_id} has no probes ({path.name} is missing): it was trained before "
                "Trainboard recorded probes")
    if not records:
        return f"run {run_id} has no probe records yet (the first is written at the first probed step)"
    if not any(record["layers"] for record in records):
        return (f"run {run_id}'s model has no conv or linear layers: its probes hold no weight or "
                "gradient statistics")
    return None


def layer_names(probes: list[dict]) -> list[str]:
    """The probed layers in model order."""
    return list(probes[-1]["layers"]) if probes else []


def movers(probes: list[dict]) -> list[str]:
    """Layers by their mean update-to-weight ratio, largest first: where training changes most."""
    def mean_ratio(name: str) -> float:
        ratios = [r["layers"][name].get("update_ratio") for r in probes if name in r["layers"]]
        ratios = [v for v in ratios if v is not None and np.isfinite(v)]
        return float(np.mean(ratios)) if ratios else -1.0
    return sorted(layer_names(probes), key=mean_ratio, reverse=True)


def series(probes: list[dict], layer: str, part: str, stat: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one statistic ("norm", "mean", "std", "zero_frac", ...) of a layer's
    weights or gradients; steps where it is missing are left out."""
    points = [(r["step"], (r["layers"].get(layer) or {}).get(part)) for r in probes]
    points = [(step, stats[stat]) for step, stats in points if stats and stats.get(stat) is not None]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)


def update_ratios(probes: list[dict], layer: str) -> tuple[np.ndarray, np.ndarray]:
    points = [(r["step"], r["layers"][layer].get("update_ratio")) for r in probes if layer in r["layers"]]
    points = [(step, value) for step, value in points if value is not None]
    return np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)


def activation_series(probes: list[dict], key: str = "dead_frac") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{ReLU module: (steps, share)} for "dead_frac" or "zero_frac"."""
    names = list(dict.fromkeys(name for r in probes for name in (r.get("activations") or {})))
    out = {}
    for name in names:
        points = [(r["step"], r["activations"][name][key]) for r in probes if name in (r.get("activations") or {})]
        out[name] = (np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float))
    return out


def histograms_over_time(probes: list[dict], layer: str, part: str,
                         bins: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(steps, edges [bins + 1], counts [steps, bins]) of a layer's weights or gradients: each
    record's own bins (min..max of that step) are spread onto shared bins over the whole range, so
    the picture over time is TensorBoard's histogram heat map. None when there is nothing to draw."""
    found = []
    for record in probes:
        stats = (record["layers"].get(layer) or {}).get(part)
        if stats and np.isfinite(stats["min"]) and np.isfinite(stats["max"]) and sum(stats["hist"]):
            found.append((record["step"], stats))
    if not found:
        return None
    low, high = min(s["min"] for _, s in found), max(s["max"] for _, s in found)
    if high <= low:
        high = low + 1e-12
    edges = np.linspace(low, high, bins + 1)
    counts = np.zeros((len(found), bins))
    for row, (_, stats) in enumerate(found):
        own = np.linspace(stats["min"], stats["max"], len(stats["hist"]) + 1)
        centres = (own[:-1] + own[1:]) / 2
        counts[row] = np.histogram(np.clip(centres, low, high), bins=edges, weights=stats["hist"])[0]
    return np.array([step for step, _ in found]), edges, counts
