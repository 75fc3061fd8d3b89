"""Export a run's best checkpoint: ONNX (dynamic batch axis, checked against torch), optionally
int8 dynamic quantisation (ONNX Runtime) and TorchScript, each with its size and val accuracy."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from core.config import read_config_values
from core.data.augment import BatchPreprocessor
from core.data.datasets import load_dataset
from core.models.registry import model_input_shape
from core.runs.checkpoint import load_model
from core.runs.derived import QUANTIZE_KINDS, export_files
from core.runs.store import RunStore

CALIBRATION_SAMPLES = 512
# Max abs difference allowed between ONNX and torch logits, per unit of the logits' scale (at least
# 1): float32 keeps ~7 digits, so logits in the millions (an untrained deep net) differ by more than
# 1e-4 in absolute terms while agreeing to the 7th digit.
PARITY_TOLERANCE = 1e-4


class ExportError(RuntimeError):
    """The exported model does not compute what the checkpoint computes."""


def onnx_session(path: Path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _split_inputs(dataset, checkpoint: dict, split: str, limit: int | None = None):
    """Normalised inputs (float32 [N, C, H, W]) and labels of a split, as the model sees them.
    Through split.batches, so folders streamed from disk work as well as in-memory data."""
    part = dataset.splits[split]
    count = len(part) if limit is None else min(limit, len(part))
    prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"])
    inputs, labels = [], []
    for images, y in part.batches(torch.arange(count), 512):
        inputs.append(prep(images, train=False))
        labels.append(y)
    return torch.cat(inputs).numpy(), torch.cat(labels).numpy()


def _accuracy(run_batch, inputs: np.ndarray, labels: np.ndarray, batch: int = 512) -> float:
    correct = 0
    for start in range(0, len(inputs), batch):
        logits = run_batch(inputs[start:start + batch])
        correct += int((np.asarray(logits).argmax(1) == labels[start:start + batch]).sum())
    return correct / max(len(labels), 1)


def _write_onnx(model: torch.nn.Module, shape, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: 0.6 s for resnet18 here, against 5 s for dynamo=True,
        # with the same parity (both ~6e-7 max abs difference).
        torch.onnx.export(model, (torch.randn(2, *shape),), str(path), input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=18, dynamo=False)


def _quantize(onnx_path: Path, target: Path, kind: str, calibration: np.ndarray | None) -> None:
    """int8 ONNX: 'dynamic' quantises weights only; 'static' also activations (QDQ), calibrated on
    training images. Static is the fast one on CPUs (resnet18: 3.6 ms against 7.8 ms fp32 here)."""
    import logging

    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    logging.getLogger().setLevel(logging.ERROR)   # quiet its advice to pre-process the graph
    if kind == "dynamic":
        quantize_dynamic(str(onnx_path), str(target), weight_type=QuantType.QInt8)
        return
    from onnxruntime.quantization.shape_inference import quant_pre_process
    prepared = onnx_path.with_name(f".{onnx_path.stem}.prepared.onnx")
    quant_pre_process(str(onnx_path), str(prepared))
    inputs = calibration

    class TrainingImages(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(inputs[i:i + 32] for i in range(0, len(inputs), 32))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}
    try:
        quantize_static(str(prepared), str(target), TrainingImages(), quant_format=QuantFormat.QDQ,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    finally:
        prepared.unlink(missing_ok=True)


def export_is_current(store: RunStore, run_id: str, kind: str = "onnx") -> bool:
    """Whether the export file `kind` was written from best.pt as it is now."""
    return export_files(store, run_id).is_fresh(kind)


def read_export_report(store: RunStore, run_id: str) -> dict | None:
    """export.json of the last export (sizes, parity, accuracies), or None without a readable one."""
    return export_files(store, run_id).read_record()


def export_run(store: RunStore, run_id: str, quantize: str | None = None, torchscript: bool = False) -> dict:
    """Write runs/<id>/model.onnx (+ an int8 model, model.ts.pt) and export.json; returns the report.
    quantize: None, "dynamic" or "static".
    Raises ExportError, leaving no model.onnx, when ONNX and torch disagree by more than 1e-4."""
    if quantize and quantize not in QUANTIZE_KINDS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_KINDS)}, got {quantize!r}")
    files = export_files(store, run_id)
    path = store.checkpoint_path(run_id, "best")
    if not path.exists():
        raise FileNotFoundError(f"run {run_id} has no best.pt yet")
    identity = files.identity()
    model, checkpoint = load_model(path)
    # What the network reads: an ImageNet backbone reads 3 channels, whatever the data has.
    shape = model_input_shape(checkpoint["config"]["model"], *checkpoint["input_shape"])
    dataset = load_dataset(read_config_values(checkpoint["config"])[0])   # once, for every check below
    val_inputs, val_labels = _split_inputs(dataset, checkpoint, "val")

    def run_torch(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    def run_onnx(x, s):
        return s.run(None, {"input": x})[0]

    with files.writing("onnx") as onnx_path:
        _write_onnx(model, shape, onnx_path)
        session = onnx_session(onnx_path)
        random_inputs = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
        parity, scale = {}, 1.0
        for name, inputs in (("random", random_inputs), ("real", val_inputs[:256])):
            expected = run_torch(inputs)
            parity[name] = float(np.abs(run_onnx(inputs, session) - expected).max())
            scale = max(scale, float(np.abs(expected).max()))
        if max(parity.values()) > PARITY_TOLERANCE * scale:
            files.path("onnx").unlink(missing_ok=True)      # an older export must not pass for this one
            raise ExportError(f"ONNX and torch disagree: max abs difference {max(parity.values()):.2e} "
                              f"> {PARITY_TOLERANCE * scale:.2g} (random {parity['random']:.2e}, "
                              f"real {parity['real']:.2e}; logits up to {scale:.3g})")
        variants = {"torch": {"file": str(path.relative_to(store.run_dir(run_id))),
                              "size_mb": path.stat().st_size / 1024**2,
                              "val_acc": _accuracy(run_torch, val_inputs, val_labels)},
                    "onnx": {"file": files.path("onnx").name, "size_mb": onnx_path.stat().st_size / 1024**2,
                             "val_acc": _accuracy(lambda x: run_onnx(x, session), val_inputs, val_labels)}}
        if quantize:
            kind = f"onnx-int8-{quantize}"
            calibration = _split_inputs(dataset, checkpoint, "train", CALIBRATION_SAMPLES)[0] \
                if quantize == "static" else None
            with files.writing(kind) as int8_path:
                _quantize(onnx_path, int8_path, quantize, calibration)
                int8 = onnx_session(int8_path)
                variants[kind] = {"file": files.path(kind).name, "size_mb": int8_path.stat().st_size / 1024**2,
                                  "val_acc": _accuracy(lambda x: run_onnx(x, int8), val_inputs, val_labels)}
    if torchscript:
        with files.writing("torchscript") as ts_path, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, torch.randn(1, *shape))
            traced.save(str(ts_path))
            size_mb = ts_path.stat().st_size / 1024**2

        def run_ts(x):
            with torch.inference_mode():
                return traced(torch.from_numpy(x)).numpy()
        variants["torchscript"] = {"file": files.path("torchscript").name, "size_mb": size_mb,
                                   "val_acc": _accuracy(run_ts, val_inputs, val_labels)}
    report = {"run_id": run_id, "checkpoint_name": "best", "epoch": checkpoint["loop"]["epoch"],
              "input_shape": list(shape), "classes": checkpoint["classes"], "mean": checkpoint["mean"],
              "std": checkpoint["std"], "parity_max_abs_diff": parity, "tolerance": PARITY_TOLERANCE * scale,
              "variants": variants, "exported_at": time.time()}
    return files.write_record(report, identity, files=[kind for kind in variants if kind != "torch"])
