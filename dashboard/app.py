"""The dashboard's FastAPI application: pages, the JSON API (OpenAPI at /docs and /openapi.json), /healthz and
/metrics (no session: for probes and Prometheus), static assets served from the package (nothing is fetched from
the internet), and the live feed task. Request bodies are judged before they are read (`dashboard.bodies`); every
response but the static assets says ``Cache-Control: no-store`` (pages, events, faces and crops are personal
data: no browser or proxy cache keeps them)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dashboard import actions, api, pages
from dashboard.bodies import BodyGuard
from dashboard.context import Dashboard
from dashboard.feed import EventFeed
from shared.errors import StoreError

STATIC = Path(__file__).parent / "static"
NO_STORE = "no-store"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def create_app(dash: Dashboard) -> FastAPI:
    feed = EventFeed(lambda q: dash.db(dash.store.events.query, q), dash.cfg.poll_s, dash.store_failed)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        stop = asyncio.Event()
        try:
            await feed.start_cursor()
        except (StoreError, OSError) as exc:  # the store is down: start at 0; the feed catches up when it is back
            dash.store_failed(exc)
        task = asyncio.create_task(feed.run(stop))
        try:
            yield
        finally:
            stop.set()
            for sub in list(feed.subscribers):
                sub.queue.put_nowait(None)
            await task

    app = FastAPI(title="ArgusNet dashboard", version="1", lifespan=lifespan,
                  description="Live tracks, recognitions and identities of an ArgusNet site.")
    app.state.dashboard = dash
    app.state.feed = feed
    app.include_router(pages.router)
    app.include_router(api.router)
    app.include_router(actions.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_middleware(BodyGuard, dash=dash)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = NO_STORE
        return response

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        try:
            dash.db(dash.store.live.cameras)
        except (StoreError, OSError) as exc:
            dash.store_failed(exc)
            return JSONResponse({"status": "store unavailable", "store": dash.store.describe()}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(dash.registry), media_type=CONTENT_TYPE_LATEST)

    return app
