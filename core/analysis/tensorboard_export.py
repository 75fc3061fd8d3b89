"""TensorBoard event files from a run folder, for people who keep TensorBoard: every metric as a
scalar, the probes' weight and gradient histograms, the settings as hparams.

A one-way export: Trainboard itself reads only its JSON Lines. Written with torch's SummaryWriter
(tensorboard's event format) and tensorboard's own hparams summaries; the folder is written aside
and renamed into place, so TensorBoard never reads half an export.

Tags: `{split}_{kind}/{field}` for metrics rows (train_step/loss, train_epoch/acc, val_epoch/loss, ...),
`weights/{layer}` and `grads/{layer}` histograms, `update_ratio/{layer}` and `dead_units/{relu}`
scalars from the probes; every value at its row's optimizer step and wall time.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from core.analysis.insight import read_probes
from core.config import SETTINGS
from core.runs.store import RunStore
from core.training.probes import histogram_edges

EVENT_FILE_PREFIX = "events.out.tfevents"
NOT_SCALARS = ("step", "epoch", "time", "split", "kind")
HPARAM_METRICS = ("val_epoch/acc", "val_epoch/loss")


@dataclass
class TensorBoardExport:
    folder: Path
    scalars: int = 0
    histograms: int = 0
    hparams: int = 0
    notes: list[str] = field(default_factory=list)     # what is missing, in a sentence each


def export_tensorboard(store: RunStore, run_id: str, out: Path | None = None) -> TensorBoardExport:
    """Write the run's event files to `out` (default: the run folder's tensorboard/), replacing an
    earlier export there. ValueError when `out` holds files that are not event files (never deleted)."""
    store.existing_run_dir(run_id)                  # RunNotFound before anything is written
    out = Path(out) if out is not None else store.tensorboard_dir(run_id)
    if out.exists() and not _is_export(out):
        raise ValueError(f"{out} holds files other than TensorBoard event files; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    # No ".tmp" suffix: the store's temp-file cleanup removes files, and this is a folder.
    partial = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        result = _write(store, run_id, partial)
        _replace_folder(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    result.folder = out
    return result


def _write(store: RunStore, run_id: str, folder: Path) -> TensorBoardExport:
    from torch.utils.tensorboard import SummaryWriter

    result = TensorBoardExport(folder)
    config = store.read_config(run_id)
    rows = store.read_metrics(run_id)
    records, missing = read_probes(store, run_id)
    with SummaryWriter(log_dir=str(folder)) as writer:
        for row in rows:
            for name, value in row.items():
                if name not in NOT_SCALARS and value is not None:
                    writer.add_scalar(f"{row['split']}_{row['kind']}/{name}", value, row["step"], row["time"])
                    result.scalars += 1
        for record in records:
            step, wall = record["step"], record["time"]
            for layer, probe in record["layers"].items():
                for part, prefix in (("weight", "weights"), ("grad", "grads")):
                    if probe[part] is not None:
                        _add_histogram(writer, f"{prefix}/{layer}", probe[part], step, wall)
                        result.histograms += 1
                if probe["update_ratio"] is not None:
                    writer.add_scalar(f"update_ratio/{layer}", probe["update_ratio"], step, wall)
                    result.scalars += 1
            for relu, activation in record["activations"].items():
                writer.add_scalar(f"dead_units/{relu}", activation["dead_frac"], step, wall)
                result.scalars += 1
        result.hparams = _add_hparams(writer, config.to_dict(), start=rows[0]["time"] if rows else None)
    if not rows:
        result.notes.append(f"no metrics: run {run_id} has not logged a step yet")
    if missing:
        result.notes.append(f"weight and gradient histograms are missing: {missing}")
    return result


def _add_histogram(writer, tag: str, stats: dict, step: int, wall: float) -> None:
    """A probe's STATS as TensorBoard's histogram: bucket limits are each bin's upper edge."""
    num = sum(stats["hist"])
    writer.add_histogram_raw(tag, min=stats["min"], max=stats["max"], num=num, sum=stats["mean"] * num,
                             sum_squares=(stats["std"] ** 2 + stats["mean"] ** 2) * num,
                             bucket_limits=histogram_edges(stats)[1:], bucket_counts=stats["hist"],
                             global_step=step, walltime=wall)


def _add_hparams(writer, values: dict, start: float | None) -> int:
    """The settings as the hparams plugin's experiment and session summaries, in this run's own
    folder (SummaryWriter.add_hparams would put them in a sub-run of their own), each with the
    domain its setting describes."""
    from tensorboard.plugins.hparams import summary_v2 as hp

    def domain(setting):
        if setting.choices or setting.kind is bool:
            return hp.Discrete(list(setting.choices or (False, True)))
        if setting.kind in (int, float) and setting.low is not None and setting.high is not None:
            return (hp.IntInterval(int(setting.low), int(setting.high)) if setting.kind is int
                    else hp.RealInterval(float(setting.low), float(setting.high)))
        return None

    hparams = [hp.HParam(name, domain(SETTINGS[name]), description=SETTINGS[name].label) if name in SETTINGS
               else hp.HParam(name) for name in values]
    metrics = [hp.Metric(tag) for tag in HPARAM_METRICS]
    writer.file_writer.add_summary(hp.hparams_config_pb(hparams, metrics, time_created_secs=start))
    writer.file_writer.add_summary(hp.hparams_pb(values, start_time_secs=start))
    return len(values)


def _is_export(folder: Path) -> bool:
    """Only event files (what an export writes), or nothing: safe to replace."""
    return folder.is_dir() and all(entry.is_file() and entry.name.startswith(EVENT_FILE_PREFIX)
                                   for entry in folder.iterdir())


def _replace_folder(new: Path, out: Path) -> None:
    """Put `new` where `out` is: readers see the old export or the new one (for an instant, none)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, old / out.name)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)
