"""ONNX export with its parity check, the ONNX Runtime predictor, and the HTTP service."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

from conftest import ROOT, tiny_digits
from test_inference import accepted_kinds


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train):
    from core.runs.store import RunStore
    store = RunStore(tmp_path_factory.mktemp("export") / "runs")
    run_id = store.create_run(tiny_digits(image_size=16, epochs=3, batch_size=32))
    assert train(store, run_id) == "completed"
    return store, run_id


def test_export_checks_parity_and_reports_each_variant(trained):
    from core.serving.export import export_run
    store, run_id = trained
    report = export_run(store, run_id, quantize="dynamic", torchscript=True)
    assert max(report["parity_max_abs_diff"].values()) < 1e-4
    variants = report["variants"]
    assert set(variants) == {"torch", "onnx", "onnx-int8-dynamic", "torchscript"}
    assert variants["onnx"]["val_acc"] == variants["torch"]["val_acc"] == variants["torchscript"]["val_acc"]
    assert variants["onnx-int8-dynamic"]["size_mb"] < variants["onnx"]["size_mb"]
    assert abs(variants["onnx-int8-dynamic"]["val_acc"] - variants["torch"]["val_acc"]) < 0.05
    for variant in variants.values():
        assert (store.run_dir(run_id) / variant["file"]).exists()


def test_static_int8_is_calibrated_and_close_to_torch(trained):
    from core.serving.export import export_run
    from core.serving.inference import Predictor
    store, run_id = trained
    variants = export_run(store, run_id, quantize="static")["variants"]
    int8 = variants["onnx-int8-static"]
    assert int8["size_mb"] < variants["onnx"]["size_mb"] / 2
    assert abs(int8["val_acc"] - variants["torch"]["val_acc"]) < 0.05
    predictor = Predictor(store, run_id, backend="onnx-int8")
    assert predictor.predict(accepted_kinds()["png-gray"])["top_k"][0]["class"] == "0"


def test_a_model_that_disagrees_fails_loudly(trained, monkeypatch):
    import torch

    import core.serving.export as export
    store, run_id = trained
    real_write = export._write_onnx

    def write_a_perturbed_model(model, shape, path):
        with torch.no_grad():
            next(model.parameters()).add_(0.5)
        real_write(model, shape, path)
        with torch.no_grad():
            next(model.parameters()).sub_(0.5)
    monkeypatch.setattr(export, "_write_onnx", write_a_perturbed_model)
    with pytest.raises(export.ExportError, match="ONNX and torch disagree"):
        export.export_run(store, run_id)
    assert not (store.run_dir(run_id) / "model.onnx").exists()


def test_onnx_predictor_matches_torch(trained):
    from core.serving.inference import Predictor
    store, run_id = trained
    onnx = Predictor(store, run_id, backend="onnx")       # exports on demand
    torch_ = Predictor(store, run_id, backend="torch")
    pixels = np.stack([onnx.preprocess(data) for data in accepted_kinds().values()])
    assert np.abs(onnx.probabilities(pixels) - torch_.probabilities(pixels)).max() < 1e-5


def test_predict_uses_the_runs_test_time_flip_on_every_backend(trained, tmp_path):
    """A run trained with tta_flip is evaluated on the mean of each image's and its mirror's logits;
    Predict must answer the same way, or it disagrees with the Evaluate page."""
    import shutil

    import torch

    from core.runs.store import RunStore
    from core.serving.inference import Predictor
    store, run_id = trained
    flipped = RunStore(tmp_path / "runs")
    shutil.copytree(store.run_dir(run_id), flipped.run_dir(run_id))
    best = flipped.checkpoint_path(run_id, "best")          # the config the checkpoint carries
    checkpoint = torch.load(best, weights_only=True)
    torch.save({**checkpoint, "config": {**checkpoint["config"], "tta_flip": True}}, best)
    plain, torch_ = Predictor(store, run_id), Predictor(flipped, run_id)
    onnx = Predictor(flipped, run_id, backend="onnx")
    assert (plain.flip, torch_.flip, onnx.flip) == (False, True, True)
    pixels = np.stack([plain.preprocess(data) for data in accepted_kinds().values()])
    inputs = plain.prep(torch.from_numpy(pixels), train=False)
    with torch.no_grad():
        mean_logits = (plain.model(inputs) + plain.model(inputs.flip(-1))) / 2
    expected = torch.softmax(mean_logits, 1).numpy()
    assert np.abs(torch_.probabilities(pixels) - expected).max() < 1e-5
    assert np.abs(onnx.probabilities(pixels) - expected).max() < 1e-5
    assert np.abs(plain.probabilities(pixels) - expected).max() > 1e-4          # the flip changes answers


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_file(url, name, data):
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_http_service(trained):
    store, run_id = trained
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "core", "serve", run_id, "--port", str(port), "--max-mb", "1",
                               "--runs", str(store.root)], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    health = json.loads(response.read())
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, server.stdout.read().decode()
                time.sleep(0.2)
        assert health["status"] == "ok" and health["backend"] == "onnx" and len(health["classes"]) == 10
        status, body = post_file(f"{base}/predict?top_k=3", "zero.png", accepted_kinds()["png-gray"])
        assert status == 200 and body["top_k"][0]["class"] == "0" and len(body["top_k"]) == 3
        status, body = post_file(f"{base}/predict", "notes.txt", b"just some text")
        assert status == 400 and "not an image" in body["error"]
        # Over the limit: refused from the declared length, before a byte of the body is read.
        import http.client
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/predict")
        connection.putheader("Content-Type", "multipart/form-data; boundary=x")
        connection.putheader("Content-Length", str(2 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413 and "too large" in json.loads(response.read())["error"]
        connection.close()
    finally:
        server.terminate()
        server.wait(10)
