"""The pre-flight check: one batch through a run's model before the long run, as the reference
document's quick_test_model and pytorch/examples' --dry-run do, reported in plain words with the
figures. What it finds wrong is said as the diagnosis says it after a run (same codes, same advice):
a user sees before launching what the diagnosis would say later.

It builds what the run would build (data, model, ImageNet weights, optimizer, augmentation; the
backbone frozen as in epoch 1), then on one training batch: the inputs as the model sees them, the
outputs, the first loss against chance (ln of the classes) and against random outputs, the gradient
(total norm; parameters whose gradient is zero or not finite), whether one optimizer step changes the
weights, then the time and memory of a step and an estimate of the run's length. Nothing is written.
`python -m core check` runs it in the CLI's process; the Train form's Check button in a child
(core.jobs.folder_job).
"""
from __future__ import annotations

import math
import resource
import sys
import time

import torch
import torch.nn.functional as F

from core.analysis.diagnosis import ERROR, INITIAL_LOSS_RATIO, WARNING, Finding, advice, class_imbalance, data_range
from core.config import RunConfig
from core.data.datasets import load_dataset
from core.training.trainer import Trainer, epoch_order

TIMED_STEPS = 3                 # steps timed after the checked one (which warms up, and compiles if asked)
NAMED = 5                       # parameters named in a finding


def check_config(config: RunConfig, on_progress=None) -> dict:
    """The check's figures and findings (JSON-ready) for a valid config: see the module's docstring."""
    progress = on_progress or (lambda done, total: None)
    torch.manual_seed(config.seed)
    dataset = load_dataset(config)
    progress(1, 4)
    trainer = Trainer(config, dataset, callbacks=[])      # a fresh model: nothing of a run is touched
    model, device = trainer.model, trainer.device
    model.train()
    trainer.emit("on_train_epoch_start")                   # a frozen backbone is frozen, as in epoch 1
    split = trainer.train_split
    order = epoch_order(len(split), config.seed, 0)
    images, labels = next(iter(split.batches(order, trainer.batch_size)))
    images, labels = images.to(device), labels.to(device)
    report = {"device": str(device), "batch": len(labels), "classes": len(dataset.classes)}

    inputs = trainer.preprocess(images, train=True)
    report["inputs"] = _input_figures(inputs)
    trainer.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=trainer.amp_dtype or torch.float32, enabled=trainer.amp):
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels, weight=trainer.class_weight, label_smoothing=config.label_smoothing)
    loss.backward()
    outputs = logits.detach().float()
    report["outputs"] = {"min": float(outputs.min()), "max": float(outputs.max()),
                         "mean_abs": float(outputs.abs().mean())}
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    random_outputs = torch.randn(logits.shape, generator=generator).to(device)
    report["loss"] = {"first": float(loss.detach()), "chance": math.log(len(dataset.classes)),
                      "random_outputs": float(F.cross_entropy(random_outputs, labels))}
    report["gradients"] = _gradient_figures(model)
    report["update"] = _update_figures(trainer)
    progress(2, 4)
    report["step"] = _step_cost(trainer, (images, labels))
    progress(3, 4)
    report["estimate"] = _duration(trainer, report["step"]["seconds"])
    report["findings"] = [f.to_dict() for f in findings(report, dataset, config)]
    report["lines"] = describe(report)
    progress(4, 4)
    return report


def _input_figures(inputs: torch.Tensor) -> dict:
    """The batch as the model reads it (normalised, augmented): range and per-channel mean and std."""
    x = inputs.float()
    channels = x.transpose(0, 1).reshape(x.shape[1], -1)
    return {"min": float(x.min()), "max": float(x.max()), "mean": [round(float(v), 4) for v in channels.mean(1)],
            "std": [round(float(v), 4) for v in channels.std(1)]}


def _gradient_figures(model: torch.nn.Module) -> dict:
    total, zero, non_finite, trained = 0.0, [], [], 0
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue           # frozen on purpose (a backbone during its head-only epochs)
        trained += 1
        grad = param.grad
        if grad is None or not torch.count_nonzero(grad):
            zero.append(name)
        elif not torch.isfinite(grad).all():
            non_finite.append(name)
        else:
            total += float(grad.float().pow(2).sum())
    return {"total_norm": math.sqrt(total), "parameters": trained, "zero": zero, "non_finite": non_finite}


def _update_figures(trainer: Trainer) -> dict:
    """One optimizer step on the gradients just computed: did the weights move?"""
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.optimizer.step()
    changed = [name for name, p in trainer.model.named_parameters() if name in before
               and not torch.equal(before[name], p.detach())]
    largest = max((float((p.detach() - before[name]).abs().max()) for name, p in trainer.model.named_parameters()
                   if name in before), default=0.0)
    trainer.optimizer.zero_grad(set_to_none=True)
    return {"changed": len(changed), "parameters": len(before), "unchanged": [n for n in before if n not in changed],
            "largest_change": largest}


def _step_cost(trainer: Trainer, batch) -> dict:
    """Seconds per training step (after one warm-up step, which compiles when compile is on) and the
    memory it takes: the GPU's peak on CUDA, this process's peak on a CPU (torch included)."""
    device = trainer.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    float(trainer.train_step(batch)[0])
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(TIMED_STEPS):
        loss, _ = trainer.train_step(batch)
    float(loss)
    seconds = (time.perf_counter() - started) / TIMED_STEPS
    if cuda:
        memory = {"peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20}
    else:
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss    # kilobytes on Linux
        memory = {"peak_process_mb": peak_kb / 1024}
    return {"seconds": seconds, "first_step_seconds": warm_up, **memory}


def _duration(trainer: Trainer, step_seconds: float) -> dict:
    """The run's training steps at the measured pace, plus a validation pass per epoch (timed on one
    batch of it, at the 4x batch validation uses)."""
    state, config = trainer.state, trainer.config
    val = trainer.val_split
    val_batch = trainer.batch_size * 4
    images, labels = next(iter(val.batches(torch.arange(min(len(val), val_batch)), val_batch)))
    started = time.perf_counter()
    trainer.model.eval()
    with torch.inference_mode():
        float(trainer.model(trainer.preprocess(images.to(trainer.device), train=False)).sum())
    val_seconds = (time.perf_counter() - started) * math.ceil(len(val) / val_batch)
    seconds = config.epochs * (state.steps_per_epoch * step_seconds + val_seconds)
    return {"steps": state.total_steps, "epochs": config.epochs, "seconds": seconds,
            "validation_seconds_per_epoch": val_seconds}


def findings(report: dict, dataset, config: RunConfig) -> list[Finding]:
    """What the diagnosis would say, said before the run: its codes and its advice."""
    values = config.to_dict()
    found = []
    loss, grads, update = report["loss"], report["gradients"], report["update"]
    if not math.isfinite(loss["first"]):
        found.append(Finding("diverged", ERROR, f"The loss of the first batch is {loss['first']}.",
                             advice("diverged", values), {"step": 0, "lr": config.lr}))
    elif loss["first"] > INITIAL_LOSS_RATIO * loss["chance"]:
        reach = max(abs(report["outputs"]["min"]), abs(report["outputs"]["max"]))
        found.append(Finding(
            "initial_loss", WARNING,
            f"The first batch's loss is {loss['first']:.3g}, {loss['first'] / loss['chance']:.1f}x the "
            f"{loss['chance']:.3g} of a model that guesses uniformly (ln {report['classes']}; random outputs give "
            f"{loss['random_outputs']:.3g}); its outputs reach {reach:.3g}.",
            advice("initial_loss", values), {"first_loss": loss["first"], "chance": loss["chance"]}))
    if grads["non_finite"]:
        found.append(Finding("exploding_gradients", ERROR,
                             f"{len(grads['non_finite'])} parameter(s) got a gradient that is not finite: "
                             f"{', '.join(grads['non_finite'][:NAMED])}.",
                             advice("exploding_gradients", values), {"parameters": grads["non_finite"]}))
    if grads["zero"]:
        found.append(Finding("vanishing_gradients", WARNING,
                             f"{len(grads['zero'])} of {grads['parameters']} trained parameter(s) got no gradient at "
                             f"all: {', '.join(grads['zero'][:NAMED])}.",
                             advice("vanishing_gradients", values), {"parameters": grads["zero"]}))
    if update["parameters"] and not update["changed"]:
        found.append(Finding("not_learning", ERROR, "One optimizer step changed no weight.",
                             advice("not_learning", values), {"lr": config.lr}))
    status = {"classes": list(dataset.classes), "class_counts": dataset.counts()["train"],
              "mean": list(dataset.mean), "std": list(dataset.std)}
    for rule in (class_imbalance, data_range):           # the diagnosis's own rules on the data's facts
        finding = rule([], status, values)
        if finding is not None:
            found.append(finding)
    return found


def describe(report: dict) -> list[str]:
    """The figures in plain words, a line each (the report's "lines": the CLI and the page show them)."""
    inputs, outputs, loss = report["inputs"], report["outputs"], report["loss"]
    grads, update, step, estimate = report["gradients"], report["update"], report["step"], report["estimate"]
    memory = (f"{step['peak_gpu_mb']:,.0f} MB of GPU memory at its peak" if "peak_gpu_mb" in step
              else f"this process peaked at {step['peak_process_mb']:,.0f} MB (torch included)")
    return [
        f"data: a batch of {report['batch']} on {report['device']}, as the model reads it: "
        f"{inputs['min']:.3g} to {inputs['max']:.3g}, mean {_listed(inputs['mean'])}, std {_listed(inputs['std'])}",
        f"outputs: {outputs['min']:.3g} to {outputs['max']:.3g} (mean |output| {outputs['mean_abs']:.3g})",
        f"first loss: {loss['first']:.4g}; chance (ln {report['classes']}) {loss['chance']:.4g}; random outputs "
        f"{loss['random_outputs']:.4g}",
        f"gradients: total norm {grads['total_norm']:.4g} over {grads['parameters']} trained parameter(s); "
        f"{len(grads['zero'])} with none, {len(grads['non_finite'])} not finite",
        f"one optimizer step: {update['changed']} of {update['parameters']} parameter(s) changed (largest change "
        f"{update['largest_change']:.3g})",
        f"a step: {step['seconds'] * 1000:.1f} ms (the first {step['first_step_seconds'] * 1000:.0f} ms); {memory}",
        f"the run: {estimate['steps']:,} steps over {estimate['epochs']} epoch(s), about "
        f"{_duration_text(estimate['seconds'])} (validation "
        f"{estimate['validation_seconds_per_epoch']:.1f} s per epoch)",
    ]


def _listed(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]"


def _duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":       # the child behind the Train form's Check button (core.jobs.folder_job)
    from core.config import read_config_values
    from core.jobs.folder_job import run_folder_job
    run_folder_job(sys.argv[1:], lambda payload, on_progress: check_config(read_config_values(payload)[0],
                                                                           on_progress))
