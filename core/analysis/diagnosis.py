"""A run's health in plain words: pure functions over its metrics rows, status and (when recorded)
probes, each finding with a code, a severity, the evidence (numbers, epochs, steps) and advice.

The rules read what a person reads in the curves of the reference documents (loss near its start,
oscillating or exploding, val loss turning up while train loss falls, ...). Their thresholds are
named below; a healthy run has no warning. Used live on the Train page and by `python -m core
diagnose RUN_ID`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"

EXPLODING_GRAD_RATIO = 50.0     # a gradient norm this many times its early median
VANISHING_GRAD_NORM = 1e-6      # a whole network's gradient norm below this learns nothing
NOT_LEARNING_DROP = 0.05        # the train loss fell by less than this fraction of its start
LOSS_EXPLOSION_RATIO = 10.0     # a train loss this many times its start (and above 10)
EARLY_SHARE = 0.25              # "early": the first quarter of the logged steps
RISING_EARLY_RATIO = 1.10       # the loss at the end of the early part over its start
OSCILLATION_SIGN_CHANGES = 0.6  # share of step-to-step changes that reverse the previous one
OSCILLATION_AMPLITUDE = 0.25    # mean |change| relative to the mean loss...
OSCILLATION_PROGRESS = 0.5      # ...while the loss stays above half its start
SLOW_EPOCH_DROP = 0.05          # train loss falling by less than 5% per epoch, on average
OVERFIT_RISE = 0.10             # val loss 10% above its minimum...
OVERFIT_MIN_EPOCHS_AFTER = 2    # ...at least this many epochs after it, while the train loss
OVERFIT_TRAIN_SLACK = 1.2       # stays below this times its value then (+0.01: memorised data is noisy near 0)
PLATEAU_EPOCHS = 3              # no val loss gain of 1% over this many epochs
PLATEAU_GAIN = 0.01
CONVERGED_TRAIN_ACC = 0.95      # a plateau above this accuracy is convergence, not a problem
UNDERFIT_TRAIN_ACC = 0.80      # train and val accuracy both below this...
UNDERFIT_MIN_EPOCHS = 3         # ...after this many epochs (epoch 1's train accuracy averages a model still at chance)
DEAD_UNITS_SHARE = 0.50         # a layer with more than half its ReLU units never active
VANISHING_LAYER_RATIO = 1e-4    # a layer's gradient norm under this share of the largest layer's
IMBALANCE_RATIO = 5.0           # largest class over smallest in the training split
INITIAL_LOSS_RATIO = 2.0        # a first loss this many times chance (ln of the classes): "the preprocessing is wrong"
UNIFORM_INPUT_STD = 0.02        # pixel std (0-1 scale) below which images are nearly uniform


# What to try, per finding code: one text for the diagnosis after a run and the pre-flight check
# before it ({lr}: the run's learning rate).
ADVICE = {
    "diverged": "Lower the learning rate (now {lr:g}) by 10x, or turn on gradient clipping; check the inputs for NaN.",
    "exploding_gradients": "Turn on gradient clipping (e.g. 1.0), lower the learning rate, or add normalisation "
                           "layers.",
    "vanishing_gradients": "Use ReLU-family activations, normalisation layers or a residual model (resnet18); check "
                           "the learning rate and the loss.",
    "dead_units": "Lower the learning rate, use LeakyReLU/GELU, add normalisation before the ReLU, or check the "
                  "weight initialisation.",
    "not_learning": "Raise the learning rate (now {lr:g}); if it is already usual (1e-3 for adam), check that labels "
                    "match the images.",
    "lr_too_high": "Lower the learning rate (now {lr:g}) by 3-10x, or add warm-up (onecycle schedule).",
    "lr_too_low": "Raise the learning rate (now {lr:g}) 3-10x, or use the LR finder.",
    "plateau": "Lower the learning rate when it stalls (plateau or cosine schedule), or try a larger model.",
    "underfitting": "Train longer, use a larger model, raise the learning rate, or reduce augmentation and weight "
                    "decay.",
    "class_imbalance": "Turn on the class-weighted loss, collect more of the rare classes, and read per-class recall "
                       "on the Evaluate page rather than accuracy.",
    "data_range": "Check the data: images that failed to load as black tiles, a wrong folder, or a constant channel.",
    "initial_loss": "Check the preprocessing (normalisation, channels, image size) and that the labels match the "
                    "images; a model whose first outputs are large spends its first steps undoing them.",
}


def advice(code: str, config: dict, **facts) -> str:
    return ADVICE[code].format(lr=config.get("lr") or 0.0, **facts)


@dataclass
class Finding:
    code: str
    severity: str
    message: str
    advice: str
    evidence: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _epoch_rows(rows: list[dict], split: str) -> list[dict]:
    by_epoch = {r["epoch"]: r for r in rows if r["split"] == split and r["kind"] == "epoch"}
    return [by_epoch[e] for e in sorted(by_epoch)]


def _step_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["split"] == "train" and r["kind"] == "step"]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def diverged(rows, status, config, probes=()) -> Finding | None:
    bad = next((r for r in rows if not _finite(r.get("loss"))), None)
    steps = _step_rows(rows)
    start = next((r["loss"] for r in steps if _finite(r.get("loss"))), None)
    exploded = next((r for r in steps if start and _finite(r.get("loss"))
                     and r["loss"] > max(LOSS_EXPLOSION_RATIO * start, 10.0)), None)
    at_step = status.get("diverged_at_step")
    if bad is None and exploded is None and at_step is None:
        return None
    if at_step is not None or bad is not None:
        step = at_step if at_step is not None else bad["step"]
        message = f"The loss became NaN or infinite at step {step}."
        evidence = {"step": step, "lr": config.get("lr")}
    else:
        message = (f"The loss exploded: {exploded['loss']:.3g} at step {exploded['step']}, "
                   f"from {start:.3g} at the start.")
        evidence = {"step": exploded["step"], "loss": exploded["loss"], "start_loss": start, "lr": config.get("lr")}
    return Finding("diverged", ERROR, message,
                   advice("diverged", config), evidence)


def exploding_gradients(rows, status, config, probes=()) -> Finding | None:
    norms = [(r["step"], r.get("grad_norm")) for r in _step_rows(rows) if r.get("grad_norm") is not None]
    if len(norms) < 3:
        return None
    early = [g for _, g in norms[:max(3, len(norms) // 5)] if _finite(g)]
    if not early:
        return None
    baseline = _median(early)
    step, peak = max(norms, key=lambda sg: sg[1] if _finite(sg[1]) else math.inf)
    if _finite(peak) and peak <= EXPLODING_GRAD_RATIO * max(baseline, 1e-12):
        return None
    return Finding("exploding_gradients", WARNING,
                   f"The gradient norm reached {peak:.3g} at step {step}, {peak / max(baseline, 1e-12):.0f}x its early "
                   f"median of {baseline:.3g}.",
                   advice("exploding_gradients", config),
                   {"step": step, "grad_norm": peak, "early_median": baseline})


def vanishing_gradients(rows, status, config, probes=()) -> Finding | None:
    what_to_try = advice("vanishing_gradients", config)
    faint = _faint_layers(probes)
    if faint:
        first = faint[0]
        return Finding("vanishing_gradients", WARNING,
                       f"The gradients fade towards the input: {len(faint)} layer(s) get a gradient under "
                       f"{VANISHING_LAYER_RATIO:g} of the largest layer's (first: {first['layer']}, "
                       f"{first['grad_norm']:.2g} against {first['largest']:.2g}).", what_to_try,
                       {"layers": faint, "step": probes[-1]["step"]})
    norms = [r["grad_norm"] for r in _step_rows(rows) if _finite(r.get("grad_norm"))]
    if len(norms) < 3 or max(norms) >= VANISHING_GRAD_NORM:
        return None
    return Finding("vanishing_gradients", WARNING,
                   f"The gradient norm never exceeded {max(norms):.2g}: the weights barely move.", what_to_try,
                   {"max_grad_norm": max(norms)})


def _faint_layers(probes) -> list[dict]:
    """Layers whose gradient, at the last probe, is a tiny fraction of the largest layer's."""
    if not probes:
        return []
    norms = {name: layer["grad"]["norm"] for name, layer in probes[-1].get("layers", {}).items()
             if layer.get("grad") and _finite(layer["grad"]["norm"])}
    if len(norms) < 2 or max(norms.values()) <= 0:
        return []
    largest = max(norms.values())
    return [{"layer": name, "grad_norm": norm, "largest": largest} for name, norm in norms.items()
            if norm < VANISHING_LAYER_RATIO * largest]


def dead_units(rows, status, config, probes=()) -> Finding | None:
    if not probes:
        return None
    activations = probes[-1].get("activations") or {}
    dead = {name: a["dead_frac"] for name, a in activations.items()
            if _finite(a.get("dead_frac")) and a["dead_frac"] > DEAD_UNITS_SHARE}
    if not dead:
        return None
    worst = max(dead, key=dead.get)
    return Finding("dead_units", WARNING,
                   f"{len(dead)} ReLU layer(s) have most of their units silent for a whole batch: {worst} "
                   f"{dead[worst]:.0%} dead at step {probes[-1]['step']}.",
                   advice("dead_units", config), {"dead_fraction": dead, "step": probes[-1]["step"]})


def not_learning(rows, status, config, probes=()) -> Finding | None:
    steps = [r for r in _step_rows(rows) if _finite(r.get("loss"))]
    train = [r for r in _epoch_rows(rows, "train") if _finite(r.get("loss"))]
    if len(steps) < 3 or not train:
        return None
    start, end = steps[0]["loss"], train[-1]["loss"]
    classes = len(status.get("classes") or []) or None
    # Near chance too: a loss that was already low at the first logged step has learned.
    near_chance = train[-1].get("acc", 0) < (2 / classes if classes else 0.5)
    if end < (1 - NOT_LEARNING_DROP) * start or not near_chance:
        return None
    chance = f" (chance: {1 / classes:.3f})" if classes else ""
    return Finding("not_learning", WARNING,
                   f"The train loss is still near its starting value: {end:.4g} after {len(train)} epoch(s), "
                   f"from {start:.4g}; train accuracy {train[-1].get('acc', float('nan')):.3f}{chance}.",
                   advice("not_learning", config),
                   {"start_loss": start, "end_loss": end, "epochs": len(train), "lr": config.get("lr")})


def lr_too_high(rows, status, config, probes=()) -> Finding | None:
    losses = [r["loss"] for r in _step_rows(rows) if _finite(r.get("loss"))]
    early = losses[:max(5, int(len(losses) * EARLY_SHARE))]
    if len(early) < 5:
        return None
    rising = early[-1] > RISING_EARLY_RATIO * early[0]
    changes = [b - a for a, b in zip(early, early[1:])]
    reversals = sum(1 for a, b in zip(changes, changes[1:]) if a * b < 0) / max(len(changes) - 1, 1)
    amplitude = sum(abs(c) for c in changes) / len(changes) / max(sum(early) / len(early), 1e-12)
    # Bouncing without progress: small-batch noise around a loss that fell fast is healthy.
    oscillating = (reversals > OSCILLATION_SIGN_CHANGES and amplitude > OSCILLATION_AMPLITUDE
                   and min(early[-3:]) > OSCILLATION_PROGRESS * early[0])
    if not (rising or oscillating):
        return None
    what = (f"rose from {early[0]:.4g} to {early[-1]:.4g} over the first {len(early)} logged steps" if rising else
            f"oscillated (swings of {amplitude:.0%} of its mean, {reversals:.0%} of changes reversing)")
    return Finding("lr_too_high", WARNING, f"Early in training the loss {what}.",
                   advice("lr_too_high", config),
                   {"early_losses": [round(v, 6) for v in early], "lr": config.get("lr")})


def lr_too_low(rows, status, config, probes=()) -> Finding | None:
    train = [r for r in _epoch_rows(rows, "train") if _finite(r.get("loss"))]
    if len(train) < 3 or train[-1].get("acc", 0) >= CONVERGED_TRAIN_ACC:
        return None
    losses = [r["loss"] for r in train]
    falling = sum(b < a for a, b in zip(losses, losses[1:])) / (len(losses) - 1)
    per_epoch = 1 - (losses[-1] / losses[0]) ** (1 / (len(losses) - 1))
    if falling < 0.8 or per_epoch >= SLOW_EPOCH_DROP or per_epoch <= 0:
        return None
    return Finding("lr_too_low", WARNING,
                   f"The train loss falls steadily but slowly: {per_epoch:.1%} per epoch on average, "
                   f"{losses[0]:.4g} to {losses[-1]:.4g} over {len(losses)} epochs.",
                   advice("lr_too_low", config),
                   {"loss_per_epoch": [round(v, 6) for v in losses], "mean_drop_per_epoch": per_epoch,
                    "lr": config.get("lr")})


def overfitting(rows, status, config, probes=()) -> Finding | None:
    val = [r for r in _epoch_rows(rows, "val") if _finite(r.get("loss"))]
    train = {r["epoch"]: r for r in _epoch_rows(rows, "train") if _finite(r.get("loss"))}
    if len(val) < 3:
        return None
    best = min(val, key=lambda r: r["loss"])
    after = [r for r in val if r["epoch"] > best["epoch"]]
    last = val[-1]
    if len(after) < OVERFIT_MIN_EPOCHS_AFTER or last["loss"] <= (1 + OVERFIT_RISE) * best["loss"]:
        return None
    if best["epoch"] not in train or last["epoch"] not in train or \
            train[last["epoch"]]["loss"] > OVERFIT_TRAIN_SLACK * train[best["epoch"]]["loss"] + 0.01:
        return None         # the train loss rose with it: instability, not overfitting
    began = after[0]["epoch"]
    return Finding("overfitting", WARNING,
                   f"From epoch {began} the val loss rose ({best['loss']:.4g} at epoch {best['epoch']} to "
                   f"{last['loss']:.4g}) while the train loss stayed low ({train[best['epoch']]['loss']:.4g} then, "
                   f"{train[last['epoch']]['loss']:.4g} now).",
                   f"Stop near epoch {best['epoch']} (early-stopping patience), add augmentation or weight decay, "
                   "or get more data. best.pt keeps the best epoch by the checkpoint metric.",
                   {"began_at_epoch": began, "best_val_epoch": best["epoch"], "best_val_loss": best["loss"],
                    "last_val_loss": last["loss"], "train_loss_at_best": train[best["epoch"]]["loss"],
                    "last_train_loss": train[last["epoch"]]["loss"]})


def plateau(rows, status, config, probes=()) -> Finding | None:
    val = [r for r in _epoch_rows(rows, "val") if _finite(r.get("loss"))]
    train = [r for r in _epoch_rows(rows, "train") if _finite(r.get("loss"))]
    if len(val) < PLATEAU_EPOCHS + 2 or not train or train[-1].get("acc", 0) >= CONVERGED_TRAIN_ACC:
        return None
    before = min(r["loss"] for r in val[:-PLATEAU_EPOCHS])
    recent = min(r["loss"] for r in val[-PLATEAU_EPOCHS:])
    if recent < (1 - PLATEAU_GAIN) * before:
        return None
    return Finding("plateau", WARNING,
                   f"The val loss has not improved by {PLATEAU_GAIN:.0%} in the last {PLATEAU_EPOCHS} epochs "
                   f"(best {before:.4g} before, {recent:.4g} since), with train accuracy {train[-1]['acc']:.3f}.",
                   advice("plateau", config),
                   {"best_before": before, "best_recent": recent, "epochs": PLATEAU_EPOCHS})


def underfitting(rows, status, config, probes=()) -> Finding | None:
    train, val = _epoch_rows(rows, "train"), _epoch_rows(rows, "val")
    if len(train) < UNDERFIT_MIN_EPOCHS or not _finite(train[-1].get("acc")) or \
            train[-1]["acc"] >= UNDERFIT_TRAIN_ACC:
        return None
    if val and _finite(val[-1].get("acc")) and val[-1]["acc"] >= UNDERFIT_TRAIN_ACC:
        return None     # it fits unseen data: augmentation or dropout make the training batches harder
    return Finding("underfitting", WARNING,
                   f"Train accuracy is {train[-1]['acc']:.3f} after {len(train)} epochs: the model does not fit "
                   "even the data it trains on.",
                   advice("underfitting", config), {"train_acc": train[-1]["acc"], "epochs": len(train)})


def initial_loss(rows, status, config, probes=()) -> Finding | None:
    """The first logged loss far above a uniform guess's: the reference document's sign of broken
    preprocessing (or of initial outputs so large that the first steps go to undoing them)."""
    classes = len(status.get("classes") or [])
    first = next((r for r in _step_rows(rows) if _finite(r.get("loss"))), None)
    if classes < 2 or first is None or first["loss"] <= INITIAL_LOSS_RATIO * math.log(classes):
        return None
    chance = math.log(classes)
    return Finding("initial_loss", WARNING,
                   f"The first logged loss, {first['loss']:.3g} at step {first['step']}, is "
                   f"{first['loss'] / chance:.1f}x the {chance:.3g} of a model that guesses uniformly (ln {classes}).",
                   advice("initial_loss", config), {"step": first["step"], "loss": first["loss"], "chance": chance})


def class_imbalance(rows, status, config, probes=()) -> Finding | None:
    counts = status.get("class_counts") or []
    if len(counts) < 2 or config.get("class_weighted_loss"):
        return None
    classes = status.get("classes") or [str(i) for i in range(len(counts))]
    small, large = min(range(len(counts)), key=counts.__getitem__), max(range(len(counts)), key=counts.__getitem__)
    if counts[small] and counts[large] / counts[small] < IMBALANCE_RATIO:
        return None
    return Finding("class_imbalance", WARNING,
                   f"The training split is imbalanced: {counts[large]:,} images of '{classes[large]}' and "
                   f"{counts[small]:,} of '{classes[small]}'.",
                   advice("class_imbalance", config),
                   {"counts": dict(zip(map(str, classes), counts))})


def data_range(rows, status, config, probes=()) -> Finding | None:
    std, mean = status.get("std") or [], status.get("mean") or []
    if not std or min(std) >= UNIFORM_INPUT_STD:
        return None
    return Finding("data_range", WARNING,
                   f"The images are nearly uniform: pixel std {min(std):.4f} (mean {mean}) on a 0-1 scale.",
                   advice("data_range", config), {"mean": mean, "std": std})


RULES = (diverged, exploding_gradients, vanishing_gradients, not_learning, lr_too_high, lr_too_low,
         overfitting, plateau, underfitting, initial_loss, class_imbalance, data_range, dead_units)
# When the loss diverged, the loss-shape rules only repeat it; when it is not learning, so do these.
# Exploding gradients explain a poor fit, and the advice to raise the lr would be the wrong one.
MASKED_BY = {"diverged": {"lr_too_high", "not_learning", "lr_too_low", "plateau", "underfitting", "exploding_gradients",
                          "overfitting"},
             "not_learning": {"lr_too_low", "plateau", "underfitting"},
             "exploding_gradients": {"lr_too_low", "underfitting"}}


def diagnose(rows: list[dict], status: dict, config: dict, probes: list[dict] = ()) -> list[Finding]:
    """Every finding for a run, errors first. rows: metrics rows (core.runs.streams.is_metrics_row); status:
    status.json; config: config.json's values; probes: probes.jsonl's records (core.training.probes), when the
    run has them (per-layer gradients, dead units)."""
    findings = [finding for rule in RULES if (finding := rule(rows, status, config, probes)) is not None]
    masked = set().union(*(MASKED_BY.get(f.code, set()) for f in findings))
    findings = [f for f in findings if f.code not in masked]
    order = {ERROR: 0, WARNING: 1, INFO: 2}
    return sorted(findings, key=lambda f: order[f.severity])


def diagnose_run(store, run_id: str) -> list[Finding]:
    """diagnose() on a run folder (UnreadableRun when its config cannot be read)."""
    from core.analysis.insight import read_probes
    probes, _ = read_probes(store, run_id)
    return diagnose(store.read_metrics(run_id), store.read_status(run_id), store.read_config(run_id).to_dict(),
                    probes)
