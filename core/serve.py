"""A small HTTP prediction service on ONNX Runtime: POST /predict (multipart field "file") and
GET /health. Starlette + uvicorn, bound to 127.0.0.1 unless told otherwise, with a request size limit.
"""
from __future__ import annotations

import asyncio

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from core.inference import Predictor

MAX_REQUEST_BYTES = 10 * 1024 * 1024


def create_app(predictor: Predictor, run_id: str, max_bytes: int = MAX_REQUEST_BYTES, top_k: int = 5) -> Starlette:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "run_id": run_id, "backend": predictor.backend,
                             "classes": predictor.classes})

    async def predict(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            return JSONResponse({"error": "a Content-Length header is required"}, status_code=411)
        if int(declared) > max_bytes:
            return JSONResponse({"error": f"request too large: {int(declared):,} bytes (limit {max_bytes:,})"},
                                status_code=413)
        try:
            form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes)
        except HTTPException as error:
            return JSONResponse({"error": f"bad multipart request: {error.detail}"}, status_code=400)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return JSONResponse({"error": 'send the image as multipart form field "file"'}, status_code=400)
        data = await upload.read()
        k = request.query_params.get("top_k", str(top_k))
        if not k.isdigit() or int(k) < 1:
            return JSONResponse({"error": f"top_k must be a positive integer, got {k!r}"}, status_code=400)
        # Inference is CPU work: off the event loop, so /health keeps answering.
        result = await asyncio.to_thread(predictor.predict, data, int(k))
        if "error" in result:
            return JSONResponse({"file": upload.filename, **result}, status_code=400)
        return JSONResponse({"file": upload.filename, **result})

    return Starlette(routes=[Route("/health", health), Route("/predict", predict, methods=["POST"])])


def serve(predictor: Predictor, run_id: str, host: str = "127.0.0.1", port: int = 8000,
          max_bytes: int = MAX_REQUEST_BYTES) -> None:
    import uvicorn
    uvicorn.run(create_app(predictor, run_id, max_bytes), host=host, port=port, log_level="warning")
