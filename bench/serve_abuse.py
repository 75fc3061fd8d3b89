"""The HTTP service under a burst of large images: peak memory, answers and latency of the service
with its limits against the same service without them (no admission limit, the datasets' 40 MP
pixel limit: the service as it was), each a fresh server process, measured in the same run.

    .venv/bin/python bench/serve_abuse.py [--requests 30]

Two payloads, both tiny on the wire (a uniform image deflates ~1000:1): a PNG just under the
datasets' 40 MP limit (the one a tester found: ~116 KB, ~0.4 s of CPU and ~250 MB to decode) and
one just under the service's 16 MP. Clients that meet a 503 wait as Retry-After says and try
again, so both services end up answering every request. Peak memory is the server process's VmHWM.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.app_server import free_port  # noqa: E402


def serve_mode(runs: str, run_id: str, port: int, unlimited: bool) -> None:
    """The child: one service on 127.0.0.1:port, with its limits or without them."""
    from core.data.images import MAX_PIXELS
    from core.runs.store import RunStore
    from core.serving.inference import Predictor
    from core.serving.service import Limits, listen, serve
    limits = Limits(max_pixels=MAX_PIXELS, concurrency=10_000, waiting=0) if unlimited else Limits()
    listener = listen("127.0.0.1", port)
    serve(Predictor(RunStore(runs), run_id, backend="onnx"), run_id, listener, limits)


def uniform_png(pixels: int) -> bytes:
    from PIL import Image
    width = int(pixels ** 0.5 * 1.25)
    height = pixels // width
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 130, 140)).save(buffer, "PNG")
    return buffer.getvalue()


def memory_kb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def post(port: int, body: bytes, boundary: str) -> tuple[int, float, int]:
    """(final status, seconds from the first try to the final answer, 503s met): a polite client,
    which waits as Retry-After says and tries again."""
    start, busy = time.perf_counter(), 0
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        try:
            connection.request("POST", "/predict", body=body,
                               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = connection.getresponse()
            response.read()
            status, retry_after = response.status, response.getheader("Retry-After")
        except OSError:
            status, retry_after = 0, None        # 0: the connection broke
        finally:
            connection.close()
        if status != 503 or busy == 100:
            return status, time.perf_counter() - start, busy
        busy += 1
        time.sleep(float(retry_after or 1))


def burst(runs: Path, run_id: str, png: bytes, requests: int, unlimited: bool) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(runs), run_id, str(port)]
                              + (["--unlimited"] if unlimited else []), cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                json.loads(connection.getresponse().read())
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the service did not start")
                time.sleep(0.1)
        idle = memory_kb(server.pid)["VmRSS"]
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
        start_together = threading.Barrier(requests)
        results = [None] * requests

        def client(i):
            start_together.wait()
            results[i] = post(port, body, boundary)
        threads = [threading.Thread(target=client, args=(i,)) for i in range(requests)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        peak = memory_kb(server.pid)["VmHWM"]
    finally:
        server.terminate()
        server.wait(30)
    latencies = sorted(latency for _, latency, _ in results)
    return {"idle_mb": idle / 1024, "peak_mb": peak / 1024, "statuses": collections.Counter(s for s, _, _ in results),
            "busy": sum(busy for _, _, busy in results),
            "p50_s": statistics.median(latencies), "max_s": latencies[-1], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--serve", nargs=3, metavar=("RUNS", "RUN_ID", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--unlimited", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        runs, run_id, port = args.serve
        serve_mode(runs, run_id, int(port), args.unlimited)
        return

    from core.config import RunConfig
    from core.data.images import MAX_PIXELS
    from core.runs.store import RunStore
    from core.serving.inference import ensure_export
    from core.serving.service import MAX_SERVE_PIXELS, Limits
    from core.training.worker import run_training
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(Path(folder) / "runs")
        run_id = store.create_run(RunConfig.for_dataset("digits", image_size=16, epochs=1))
        assert run_training(store, run_id, handle_signals=False) == "completed"
        ensure_export(store, run_id, "onnx")
        print(f"{args.requests} requests at once; {os.cpu_count()} CPUs; limits: {Limits().concurrency} "
              f"predictions at once, {Limits().max_in_flight} in flight, {MAX_SERVE_PIXELS:,} pixels")
        print(f"{'payload':<28} {'service':<10} {'idle MB':>8} {'peak MB':>8} {'growth MB':>9}  "
              f"{'answers':<10} {'503s met':>8} {'p50 s':>6} {'max s':>6} {'all s':>6}")
        for label, pixels in (("40 MP PNG (datasets)", MAX_PIXELS - 100_000),
                              ("16 MP PNG (service)", MAX_SERVE_PIXELS - 100_000)):
            png = uniform_png(pixels)
            figures = {}
            for name in ("unlimited", "limited"):
                r = figures[name] = burst(store.root, run_id, png, args.requests, name == "unlimited")
                answers = " ".join(f"{status}x{count}" for status, count in sorted(r["statuses"].items()))
                print(f"{f'{label} {len(png) // 1024} KB':<28} {name:<10} {r['idle_mb']:>8.0f} "
                      f"{r['peak_mb']:>8.0f} {r['peak_mb'] - r['idle_mb']:>9.0f}  {answers:<10} {r['busy']:>8} "
                      f"{r['p50_s']:>6.2f} {r['max_s']:>6.2f} {r['wall_s']:>6.2f}", flush=True)
            unlimited, limited = figures["unlimited"], figures["limited"]
            growth = {k: max(v["peak_mb"] - v["idle_mb"], 1) for k, v in figures.items()}
            print(f"  unlimited / limited: peak memory {unlimited['peak_mb'] / limited['peak_mb']:.1f}x, growth over "
                  f"idle {growth['unlimited'] / growth['limited']:.1f}x, "
                  f"time for all {unlimited['wall_s'] / limited['wall_s']:.2f}x")

if __name__ == "__main__":
    main()
