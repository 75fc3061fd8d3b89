"""Looking inside a model: torchinfo layer table, parameter counts and size, weight statistics."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from core.models.registry import build_model, parameter_counts


def layer_table(model: nn.Module, input_shape: tuple[int, int, int], depth: int = 3) -> list[dict]:
    """torchinfo's summary as rows: layer, depth, output shape, params, mult-adds.

    Each row counts everything inside it: params are the module's own and its submodules' (torchinfo's
    num_params), and mult-adds are the sum over the layers without submodules that ran inside it,
    the only ones whose mult-adds torchinfo counts; so a container's row is the sum of its children's
    rows and the root's is torchinfo's total_mult_adds. torchinfo's own `macs` of a container is no
    such sum (it multiplies every nested parameter by the container's output size), so it is not used.
    A layer run again (a block's ReLU called twice; torchinfo's "(recursive)") has a row per run,
    marked "reused" from the second on: its mult-adds are that run's, its params 0, as they are
    counted at its first row; so a depth's rows add up to the model's parameters.
    """
    from torchinfo import summary
    stats = summary(model, input_size=(1, *input_shape), depth=depth, verbose=0,
                    col_names=("output_size", "num_params", "mult_adds"), device="cpu")
    rows = []
    for layer in stats.summary_list:
        if layer.depth > depth:
            continue
        # layer.children: every row below it down to the next one at its depth or above, leaves
        # deeper than the table shows included.
        mult_adds = layer.macs if layer.is_leaf_layer else sum(
            child.macs for child in layer.children if child.is_leaf_layer)
        label = f"{'  ' * layer.depth}{layer.class_name}" + (
            f" ({layer.var_name})" if layer.var_name and layer.var_name != layer.class_name else "")
        rows.append({"layer": label + (", reused" if layer.is_recursive else ""),
                     "depth": layer.depth, "output shape": str(list(layer.output_size)),
                     "params": 0 if layer.is_recursive else int(layer.num_params),
                     "mult-adds": int(mult_adds)})
    return rows


def model_size(model: nn.Module) -> dict:
    counts = parameter_counts(model)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    return {**counts, "size_mb": size / 1024**2}


def weight_stats(state_dict: dict) -> list[dict]:
    """Per weight tensor: shape, count, mean, std, min, max, and the share of near-zero values."""
    rows = []
    for name, tensor in state_dict.items():
        if not torch.is_tensor(tensor) or not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        t = tensor.detach().float().cpu()
        rows.append({"layer": name, "shape": str(list(t.shape)), "count": t.numel(),
                     "mean": t.mean().item(), "std": t.std().item() if t.numel() > 1 else 0.0,
                     "min": t.min().item(), "max": t.max().item(),
                     "near zero %": 100.0 * (t.abs() < 1e-3).float().mean().item()})
    return rows


def weight_histogram(tensor: torch.Tensor, bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    values = tensor.detach().float().cpu().numpy().ravel()
    counts, edges = np.histogram(values, bins=bins)
    return edges, counts


def fresh_model(name: str, input_shape: tuple[int, int, int], classes: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, *input_shape, classes)
