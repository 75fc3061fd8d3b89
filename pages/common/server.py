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
from starlette.responses import JSONResponse
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


ROUTES = [Route("/health", health, methods=["GET"])]
