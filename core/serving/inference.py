"""Predictor: a run's best checkpoint (torch) or its ONNX export (ONNX Runtime, fp32 or static
int8) -> top-k classes
for image bytes, with the run's own preprocessing (size, channels, normalisation). Refused files
get a message, never a crash."""
from __future__ import annotations

import time

import numpy as np
import torch

from core.config import read_config_values
from core.data.augment import BatchPreprocessor, predict_logits
from core.data.images import ImageRefused, decode
from core.runs.checkpoint import load_model
from core.runs.derived import SERVING_BACKENDS, export_files
from core.runs.store import RunStore
from core.training.accelerator import resolve_device

BACKENDS = tuple(SERVING_BACKENDS)


def ensure_export(store: RunStore, run_id: str, backend: str):
    """The export file an ONNX backend reads, exported now if missing or older than best.pt."""
    from core.serving.export import export_is_current, export_run
    kind = SERVING_BACKENDS[backend]
    if not export_is_current(store, run_id, kind):
        export_run(store, run_id, quantize=kind.removeprefix("onnx-int8-") if kind != "onnx" else None)
    return export_files(store, run_id).path(kind)


class Predictor:
    def __init__(self, store: RunStore, run_id: str, backend: str = "torch", device: str = "auto"):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        path = store.checkpoint_path(run_id, "best")
        if not path.exists():
            raise FileNotFoundError(f"run {run_id} has no best.pt yet")
        self.device = resolve_device(device) if backend == "torch" else torch.device("cpu")
        model, checkpoint = load_model(path, self.device)
        self.backend = backend
        self.classes = list(checkpoint["classes"])
        self.channels, self.size, _ = checkpoint["input_shape"]
        if backend == "torch":
            self.model = model
        else:
            from core.serving.export import onnx_session
            self.session = onnx_session(ensure_export(store, run_id, backend))
        self.prep = BatchPreprocessor(checkpoint["mean"], checkpoint["std"], device=self.device)
        # The test-time flip of the checkpoint's own config, as evaluate.predict_split reads it:
        # Predict agrees with the Evaluate page.
        self.flip = bool(read_config_values(checkpoint["config"])[0].tta_flip)

    def preprocess(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 [C, H, W] as the model sees it (before normalisation); ImageRefused
        for any file that cannot be used."""
        return decode(data, self.size, self.channels)

    @torch.inference_mode()
    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, C, H, W] -> class probabilities [N, classes]."""
        inputs = self.prep(torch.from_numpy(pixels).to(self.device), train=False)
        logits = predict_logits(self._logits, inputs, self.flip)
        return torch.softmax(logits, 1).cpu().numpy()

    def _logits(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.backend == "torch":
            return self.model(inputs).float()
        return torch.from_numpy(self.session.run(None, {"input": inputs.contiguous().numpy()})[0])

    def predict(self, data: bytes, top_k: int = 5) -> dict:
        """{"top_k": [{"class", "prob"}], "latency_ms"}, or {"error"} for every refused file (the
        HTTP service and the CLI rely on it: no decoder error gets past this)."""
        start = time.perf_counter()
        try:
            pixels = self.preprocess(data)
        except ImageRefused as refused:
            return {"error": str(refused)}
        probs = self.probabilities(pixels[None])[0]
        order = np.argsort(-probs)[:min(max(1, top_k), len(self.classes))]
        return {"top_k": [{"class": self.classes[i], "prob": float(probs[i])} for i in order],
                "latency_ms": (time.perf_counter() - start) * 1000}
