"""Inference latency (batch 1, p50/p99) and throughput (batch 256): torch against ONNX Runtime
(fp32, and static int8 calibrated on random inputs: weights are random here too), for simple-cnn and
resnet18 on 3x32x32 inputs, same weights, measured one after the other in one process.

    .venv/bin/python bench/inference_latency.py [--runs 300]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.models.registry import build_model  # noqa: E402
from core.serving.export import _write_onnx, onnx_session  # noqa: E402

SHAPE = (3, 32, 32)


def quantize_static_random(path: Path, folder: str) -> Path:
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    logging.getLogger().setLevel(logging.ERROR)
    prepared, target = Path(folder) / f"{path.stem}.pre.onnx", Path(folder) / f"{path.stem}.int8.onnx"
    quant_pre_process(str(path), str(prepared))
    rng = np.random.default_rng(2)

    class Random(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": rng.normal(size=(32, *SHAPE)).astype(np.float32)} for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)
    quantize_static(str(prepared), str(target), Random(), quant_format=QuantFormat.QDQ,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return target


def timings(run, inputs, repeats: int) -> np.ndarray:
    for _ in range(10):
        run(inputs)
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run(inputs)
        out[i] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), inputs {SHAPE}, CPU")
    print(f"{'model':<11} {'backend':<10} {'b1 p50 ms':>10} {'b1 p99 ms':>10} {'b256 img/s':>11}")
    with tempfile.TemporaryDirectory() as folder:
        for name in ("simple-cnn", "resnet18"):
            torch.manual_seed(0)
            model = build_model(name, *SHAPE, 10).eval()
            path = Path(folder) / f"{name}.onnx"
            _write_onnx(model, SHAPE, path)
            session = onnx_session(path)
            int8 = onnx_session(quantize_static_random(path, folder))

            def run_torch(x, model=model):
                with torch.inference_mode():
                    return model(torch.from_numpy(x)).numpy()

            def run_onnx(x, session=session):
                return session.run(None, {"input": x})[0]

            def run_int8(x, int8=int8):
                return int8.run(None, {"input": x})[0]

            one = np.random.default_rng(0).normal(size=(1, *SHAPE)).astype(np.float32)
            many = np.random.default_rng(1).normal(size=(256, *SHAPE)).astype(np.float32)
            assert np.abs(run_torch(many) - run_onnx(many)).max() < 1e-4
            results = {}
            for backend, run in (("torch", run_torch), ("onnx", run_onnx), ("onnx-int8", run_int8)):
                single = timings(run, one, args.runs)
                batch = timings(run, many, max(5, args.runs // 30))
                results[backend] = (np.percentile(single, 50) * 1000, np.percentile(single, 99) * 1000,
                                    256 / np.median(batch))
                print(f"{name:<11} {backend:<10} {results[backend][0]:10.3f} {results[backend][1]:10.3f} "
                      f"{results[backend][2]:11.0f}")
            for backend in ("onnx", "onnx-int8"):
                print(f"{name:<11} ratio {backend}/torch: p50 latency {results[backend][0] / results['torch'][0]:.2f}x "
                      f"(target <= 0.5x), batch-256 throughput {results[backend][2] / results['torch'][2]:.2f}x")


if __name__ == "__main__":
    main()
