"""The HTTP service under abuse, against a real uvicorn server on 127.0.0.1 and a real Predictor:
503 when busy, 408 for a body that does not come, pixels judged from the header, JSON for every
failure, no traceback for a client that hangs up; and the CLI's one-line refusals (bad port,
hostile checkpoint)."""
import contextlib
import http.client
import json
import logging
import pickle
import socket
import struct
import threading
import time
import uuid
import zlib

import pytest

from conftest import tiny_digits
from test_inference import accepted_kinds


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, train):
    """(store, run_id, predictor) of a trained digits run."""
    from core.runs.store import RunStore
    from core.serving.inference import Predictor
    store = RunStore(tmp_path_factory.mktemp("serve") / "runs")
    run_id = store.create_run(tiny_digits())
    assert train(store, run_id) == "completed"
    return store, run_id, Predictor(store, run_id, backend="torch")


def wait_until(condition, what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def served(predictor, **limits):
    """A uvicorn server in a thread on an ephemeral port of 127.0.0.1; yields the port. Its logs
    propagate to the root logger (log_config=None), where caplog sees them."""
    import uvicorn

    from core.serving.service import Limits, create_app
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(predictor, "run", Limits(**limits)), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(60)


def request(port, method, path, body=b"", headers=None):
    """(status, headers (any case), JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        connection.close()


def multipart(*files):
    """(body, headers) of a form with one part per (field, filename, bytes)."""
    boundary = uuid.uuid4().hex
    body = b""
    for field, name, data in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def post_image(port, data, name="image.png"):
    body, headers = multipart(("file", name, data))
    return request(port, "POST", "/predict", body, headers)


def in_flight(port) -> int:
    return request(port, "GET", "/health")[2]["in_flight"]


def start_stalled_post(port, declared=100_000):
    """A raw POST /predict that sends its headers and the first bytes of its body, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: %d\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; "
                 b"filename=\"x.png\"\r\n\r\n" % declared)
    return sock


def read_until_closed(sock) -> bytes:
    """What the server sent, once it has closed the connection (a socket timeout fails the test: the
    connection was left open). A reset ends it too: bytes that reach a closed socket make the kernel
    answer with one, which may discard the response before it is read."""
    raw = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            raw += chunk
    return raw


def parse_response(raw: bytes):
    """(status, JSON body) of a raw HTTP response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def png_header_only(width, height):
    """A PNG whose IHDR declares width x height, followed by an IDAT that is not valid zlib: a
    decoder would call it broken, so a size refusal proves nothing was decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"not zlib" * 8) + chunk(b"IEND", b"")


def test_a_busy_service_answers_503_at_once_and_recovers(served_run):
    predictor = served_run[2]
    with served(predictor, concurrency=1, waiting=1, body_timeout_s=120) as port:
        stalled = [start_stalled_post(port) for _ in range(2)]     # both limits' worth, held open
        try:
            wait_until(lambda: in_flight(port) == 2, "two requests in flight")
            status, headers, body = post_image(port, accepted_kinds()["png-gray"])
            assert status == 503 and body["error"] == "busy: 2 requests in progress, retry shortly"
            assert headers["Retry-After"] == "1"
        finally:
            for sock in stalled:
                sock.close()
        wait_until(lambda: in_flight(port) == 0, "the abandoned requests to end")
        status, _, body = post_image(port, accepted_kinds()["png-gray"])
        assert status == 200 and body["top_k"] == predictor.predict(accepted_kinds()["png-gray"])["top_k"]


@pytest.mark.parametrize("client", ["stops", "trickles"])
def test_a_body_that_does_not_arrive_gets_408_and_frees_its_slot(served_run, client):
    with served(served_run[2], body_timeout_s=0.3) as port:
        sock = start_stalled_post(port)
        stop = threading.Event()

        def trickle():
            with contextlib.suppress(OSError):      # the server closes the connection on us
                while not stop.wait(0.05):
                    sock.sendall(b"x")
        sender = threading.Thread(target=trickle if client == "trickles" else stop.wait)
        sender.start()
        try:
            raw = read_until_closed(sock)
        finally:
            stop.set()
            sender.join()
            sock.close()
        if client == "stops" or raw:    # a client still sending as the server closes may get a reset instead
            status, body = parse_response(raw)
            assert status == 408 and body["error"] == "request body not received within 0.3 s"
        assert in_flight(port) == 0


@pytest.mark.parametrize("width, height, reason", [
    (5000, 4000, "image too large to serve: 5000x4000 pixels (limit 16,000,000)"),
    (20000, 20000, "image too large to serve"),       # PIL's own bomb limit answers first
])
def test_too_many_pixels_are_refused_from_the_header_alone(served_run, width, height, reason):
    with served(served_run[2]) as port:
        status, _, body = post_image(port, png_header_only(width, height), "huge.png")
    assert status == 400 and body["error"].startswith(reason) and body["file"] == "huge.png"


def test_an_image_under_the_limit_is_still_decoded(served_run):
    """The header check lets through what the predictor must judge: the same broken IDAT, small."""
    with served(served_run[2]) as port:
        status, _, body = post_image(port, png_header_only(64, 64))
    assert status == 400 and "too large" not in body["error"]


def test_more_than_one_file_is_refused(served_run):
    image = accepted_kinds()["png-gray"]
    with served(served_run[2]) as port:
        body, headers = multipart(("file", "a.png", image), ("other", "b.png", image))
        status, _, answer = request(port, "POST", "/predict", body, headers)
    assert status == 400 and answer["error"].startswith("bad multipart request: Too many files")


def test_unknown_paths_and_methods_are_answered_in_json(served_run):
    with served(served_run[2]) as port:
        status, _, body = request(port, "GET", "/nope")
        assert status == 404 and "GET /health and POST /predict" in body["error"]
        status, headers, body = request(port, "GET", "/predict")
        assert status == 405 and body["error"] == "GET is not allowed on /predict (allowed: POST)"
        assert headers["Allow"] == "POST"


def test_an_unexpected_error_is_500_json_and_logged_once(served_run, monkeypatch, caplog):
    predictor = served_run[2]

    def broken(data, top_k=5):
        raise RuntimeError("a bug")
    monkeypatch.setattr(predictor, "predict", broken)
    caplog.set_level(logging.INFO)
    with served(predictor) as port:
        status, headers, body = post_image(port, accepted_kinds()["png-gray"])
    assert status == 500 and body == {"error": "internal error: RuntimeError"}
    assert headers["content-type"] == "application/json"
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and isinstance(tracebacks[0].exc_info[1], RuntimeError)


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(served_run, caplog):
    caplog.set_level(logging.DEBUG)
    with served(served_run[2]) as port:
        start_stalled_post(port).close()
        wait_until(lambda: in_flight(port) == 0, "the abandoned request to end")
    # The server has stopped: every task it ran has finished and logged what it would.
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("port, problem", [
    ("70000", "--port must be from 1 to 65535, got 70000"),
    ("0", "--port must be from 1 to 65535, got 0"),
    ("-1", "--port must be from 1 to 65535, got -1"),
    ("eighty", "--port must be a whole number from 1 to 65535, got 'eighty'"),
])
def test_serve_refuses_a_bad_port_in_one_line(served_run, cli, port, problem):
    store, run_id, _ = served_run
    result = cli("serve", run_id, "--port", port, runs=store.root)
    assert result.returncode == 2 and result.stderr == f"error: {problem}\n"


def test_serve_refuses_a_port_in_use_in_one_line(served_run, cli):
    store, run_id, _ = served_run
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli("serve", run_id, "--port", port, runs=store.root)
    assert result.returncode == 2 and result.stderr == f"error: port {port} on 127.0.0.1 is already in use\n"


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("content", ["hostile pickle", "garbage"])
def test_export_of_a_file_that_is_no_checkpoint_is_one_line(store, cli, tmp_path, content):
    marker = tmp_path / "code-ran"
    run_id = store.create_run(tiny_digits())
    best = store.checkpoint_path(run_id, "best")
    best.parent.mkdir(parents=True, exist_ok=True)
    best.write_bytes(pickle.dumps(RunsCode(marker)) if content == "hostile pickle" else b"\x00garbage" * 50)
    result = cli("export", run_id, runs=store.root)
    assert result.returncode == 2 and not marker.exists()
    assert result.stderr.startswith(f"error: {best} is not a readable Trainboard checkpoint: the safe loader "
                                    "refused it (")
    assert result.stderr.endswith("), so nothing in it ran\n") and result.stderr.count("\n") == 1
    assert "weights_only" not in result.stderr
