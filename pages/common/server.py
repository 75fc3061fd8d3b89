"""The server's own life, beside the pages: the job queue starts with the server and stops with it
(not with the first page view), and GET /health reports it. app.py's st.App wires these in; its
routes and middleware are also where a password check, or the prediction service beside the
dashboard, can go.

pages.common.shared is imported inside the functions: imported with app.py, before Streamlit's
runtime starts, its st.cache_data functions would warn that no runtime was found.
"""
from __future__ import annotations

import sys
from contextlib import asynccontextmanager

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app):
    """Start: the JobManager of this server's runs folder, with its recovery (off the event loop: it
    reads the runs folder). Shutdown (SIGTERM, Ctrl-C): every run it trains is asked to stop at its
    next batch and waited for, so it ends stopped and resumable."""
    from pages.common import shared
    jobs = await anyio.to_thread.run_sync(shared.jobs)
    print(describe(jobs), file=sys.stderr, flush=True)
    try:
        yield
    finally:
        health = jobs.health()
        if health["running"]:
            print(f"Trainboard: stopping {health['running']} run(s) at their next batch: "
                  f"{', '.join(health['running_runs'])}", file=sys.stderr, flush=True)
        await anyio.to_thread.run_sync(jobs.shutdown)


def describe(jobs) -> str:
    return (f"Trainboard: job queue on {jobs.store.root.resolve()} with {jobs.max_concurrent} worker(s); "
            f"{len(jobs.requeued)} run(s) queued again, {len(jobs.recovered)} marked interrupted, "
            f"{len(jobs.followed)} still training followed")


async def health(request: Request) -> JSONResponse:
    """200 with the queue's figures while every worker is alive, 503 otherwise (or once shut down)."""
    from pages.common import shared
    report = shared.jobs().health()
    return JSONResponse(report, status_code=200 if report["ok"] else 503)


async def thumbnail(request: Request) -> Response:
    """GET /api/thumbnail?run=ID&checkpoint=best&split=val&row=N: the image of a projector point, for its
    hover (pages/common/projector_view.py); 404 for a run, split or row the maps do not have."""
    from core.runs.derived import EMBEDDING_SPLITS
    from core.runs.layout import CHECKPOINTS, check_run_id
    from pages.common import projector_view
    query = request.query_params
    try:
        run_id, checkpoint, split = check_run_id(query.get("run", "")), query.get("checkpoint"), query.get("split")
        if checkpoint not in CHECKPOINTS or split not in EMBEDDING_SPLITS:
            raise ValueError("no such checkpoint or split")
        png = await anyio.to_thread.run_sync(projector_view.thumbnail_png, run_id, checkpoint, split,
                                             int(query.get("row", "")))
    except (ValueError, KeyError, OSError) as error:
        return PlainTextResponse(f"no such sample: {error}", status_code=404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


ROUTES = [Route("/health", health, methods=["GET"]), Route("/api/thumbnail", thumbnail, methods=["GET"])]
