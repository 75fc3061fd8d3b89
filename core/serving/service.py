"""A small HTTP prediction service: POST /predict (multipart field "file") and GET /health.

Starlette + uvicorn, bound to 127.0.0.1 unless told otherwise, and bounded under abuse: the request
size, the requests in flight (503 beyond them), the time a client may take to send its body (408),
and the pixels one request may make us decode (400). Every failure is answered with JSON
{"error": reason}; a client that hangs up mid-request is not an error and leaves no traceback.
"""
from __future__ import annotations

import asyncio
import errno
import io
import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from core.serving.inference import Predictor

MAX_REQUEST_BYTES = 10 * 1024 * 1024
# Below the datasets' 40 MP (core.data.images.MAX_PIXELS): a 40 MP PNG of 116 KB costs ~0.4 s of CPU and
# ~200 MB to decode (bench/serve_abuse.py), too much to take from any client; 16 MP is a large photo.
MAX_SERVE_PIXELS = 16_000_000
BODY_TIMEOUT_S = 10.0
WAITING_PER_WORKER = 2          # requests admitted beyond those predicting: reading their body or queued
RETRY_AFTER_S = 1


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Limits:
    """What the service takes on at once and per request (README: "The service stays bounded")."""
    max_bytes: int = MAX_REQUEST_BYTES
    max_pixels: int = MAX_SERVE_PIXELS
    body_timeout_s: float = BODY_TIMEOUT_S
    concurrency: int = field(default_factory=available_cpus)    # predictions decoding or running at once
    waiting: int | None = None                                  # default: WAITING_PER_WORKER per worker

    @property
    def max_in_flight(self) -> int:
        return self.concurrency + (WAITING_PER_WORKER * self.concurrency if self.waiting is None else self.waiting)


def pixels_refusal(data: bytes, max_pixels: int) -> str | None:
    """Why an image is too large to serve, judged from its header alone (PIL opens lazily: the size
    is known before a pixel is decoded), or None to let the predictor read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as error:      # PIL's own limit, far above ours
        return f"image too large to serve: {error}"
    except Exception:
        return None     # not an image or a broken header: the predictor says which, in its words
    if width * height > max_pixels:
        return f"image too large to serve: {width}x{height} pixels (limit {max_pixels:,})"
    return None


def error_response(status: int, message: str, close: bool = False, **headers: str) -> JSONResponse:
    """{"error": message}. close: for answers given before the body was read, so that the client's
    unread (or never sent) body cannot keep the connection."""
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(predictor: Predictor, run_id: str, limits: Limits = Limits(), top_k: int = 5) -> ASGIApp:
    in_flight = 0                                   # one event loop: a plain counter is enough
    predicting = asyncio.Semaphore(limits.concurrency)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "run_id": run_id, "backend": predictor.backend,
                             "classes": predictor.classes, "in_flight": in_flight})

    def predict_within_limits(data: bytes, k: int) -> dict:
        refusal = pixels_refusal(data, limits.max_pixels)
        return {"error": refusal} if refusal else predictor.predict(data, k)

    async def answer(request: Request) -> JSONResponse:
        k = request.query_params.get("top_k", str(top_k))
        if not k.isdigit() or int(k) < 1:
            return error_response(400, f"top_k must be a positive integer, got {k!r}", close=True)
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return error_response(411, "a Content-Length header is required", close=True)
        if int(declared) > limits.max_bytes:
            return error_response(413, f"request too large: {int(declared):,} bytes (limit {limits.max_bytes:,})",
                                  close=True)
        try:
            # uvicorn times out idle keep-alive connections, never a body in progress: this does.
            async with asyncio.timeout(limits.body_timeout_s):
                form = await request.form(max_files=1, max_fields=4, max_part_size=limits.max_bytes)
        except TimeoutError:
            return error_response(408, f"request body not received within {limits.body_timeout_s:g} s",
                                  close=True)
        except HTTPException as error:
            return error_response(400, f"bad multipart request: {error.detail}", close=True)
        try:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                return error_response(400, 'send the image as multipart form field "file"')
            data = await upload.read()
        finally:
            await form.close()
        async with predicting:
            # Decoding and inference are CPU work: off the event loop, so /health keeps answering.
            result = await asyncio.to_thread(predict_within_limits, data, int(k))
        if "error" in result:
            return JSONResponse({"file": upload.filename, **result}, status_code=400)
        return JSONResponse({"file": upload.filename, **result})

    async def predict(request: Request) -> JSONResponse:
        nonlocal in_flight
        if in_flight >= limits.max_in_flight:
            # At once, before the body: queuing without end is what took memory to GBs.
            return error_response(503, f"busy: {in_flight} requests in progress, retry shortly", close=True,
                                  **{"Retry-After": str(RETRY_AFTER_S)})
        in_flight += 1
        try:
            return await answer(request)
        finally:
            in_flight -= 1

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = {404: f"no {request.url.path} here: the service answers GET /health and POST /predict",
                   405: f"{request.method} is not allowed on {request.url.path} "
                        f"(allowed: {(error.headers or {}).get('Allow', '')})"}.get(error.status_code, error.detail)
        return JSONResponse({"error": message}, status_code=error.status_code, headers=error.headers)

    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)

    app = Starlette(routes=[Route("/health", health), Route("/predict", predict, methods=["POST"])],
                    exception_handlers={HTTPException: http_error, Exception: internal_error})
    return _QuietDisconnects(app)


class _QuietDisconnects:
    """Outermost layer: a client that hung up mid-request (Starlette raises ClientDisconnect while
    reading the body) is not an error, so it stops here instead of reaching uvicorn, which would log
    a traceback. Any other exception has been answered with the 500 above and goes on to uvicorn,
    which logs it, once. (anyio's BrokenResourceError comes only from BaseHTTPMiddleware's streams,
    which this app does not use.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            pass


def listen(host: str, port: str | int) -> socket.socket:
    """A socket listening on host:port, or ValueError with the one-line reason (not a port number,
    already in use, no such address); uvicorn serves on it, so what was checked is what is used."""
    text = str(port).strip()
    if not text.lstrip("-").isdigit():
        raise ValueError(f"--port must be a whole number from 1 to 65535, got {text!r}")
    number = int(text)
    if not 1 <= number <= 65535:
        raise ValueError(f"--port must be from 1 to 65535, got {number}")
    try:
        family = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, number), family=family)
    except socket.gaierror as error:
        raise ValueError(f"cannot listen on {host!r}: {error.strerror}") from None
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise ValueError(f"port {number} on {host} is already in use") from None
        raise ValueError(f"cannot listen on {host}:{number}: {error.strerror or error}") from None


def serve(predictor: Predictor, run_id: str, listener: socket.socket, limits: Limits = Limits()) -> None:
    import uvicorn
    config = uvicorn.Config(create_app(predictor, run_id, limits), log_level="warning")
    uvicorn.Server(config).run(sockets=[listener])
