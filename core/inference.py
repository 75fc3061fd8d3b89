"""Predictor: a run's best checkpoint -> top-k classes for image bytes, with the run's own
preprocessing (size, channels, normalisation). Refused files get a message, never a crash."""
from __future__ import annotations

import time

import numpy as np
import torch

from core.augment import BatchPreprocessor
from core.callbacks import load_checkpoint
from core.evaluate import model_from_checkpoint
from core.images import ImageRefused, open_image, to_array
from core.store import RunStore
from core.trainer import resolve_device


class Predictor:
    def __init__(self, store: RunStore, run_id: str, checkpoint: str = "best", device: str = "auto"):
        path = store.checkpoint_path(run_id, checkpoint)
        if not path.exists():
            raise FileNotFoundError(f"run {run_id} has no {checkpoint}.pt yet")
        loaded = load_checkpoint(path)
        self.device = resolve_device(device)
        self.model = model_from_checkpoint(loaded, self.device)
        self.classes = list(loaded["classes"])
        self.channels, self.size, _ = loaded["input_shape"]
        self.prep = BatchPreprocessor(loaded["mean"], loaded["std"], device=self.device)

    def preprocess(self, data: bytes) -> np.ndarray:
        """Image bytes -> uint8 [C, H, W] as the model sees it (before normalisation)."""
        return to_array(open_image(data), self.size, self.channels)

    @torch.inference_mode()
    def predict(self, data: bytes, top_k: int = 5) -> dict:
        """{"top_k": [{"class", "prob"}], "latency_ms"} or {"error"} for a refused file."""
        start = time.perf_counter()
        try:
            pixels = self.preprocess(data)
        except ImageRefused as refused:
            return {"error": str(refused)}
        batch = torch.from_numpy(pixels)[None].to(self.device)
        probs = torch.softmax(self.model(self.prep(batch, train=False)).float(), 1)[0].cpu()
        values, index = probs.topk(min(max(1, top_k), len(self.classes)))
        latency = (time.perf_counter() - start) * 1000
        return {"top_k": [{"class": self.classes[i], "prob": float(p)} for p, i in zip(values.tolist(), index.tolist())],
                "latency_ms": latency}
