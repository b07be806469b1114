"""The JSON API's reads (every route needs a session; 401 without): events, live tracks, cameras and their
previews, crops, identities with their timelines and faces, and the live stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import numpy as np
import simplejpeg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from dashboard.guard import Viewer, dashboard_of, require_viewer
from dashboard.timeline import identity_json
from dashboard.views import cameras_json, event_json, live_json
from shared.errors import GalleryError, StoreError
from shared.ids import is_valid_id
from store.types import EventQuery

router = APIRouter(prefix="/api")
MAX_LIMIT = 1000
KEEPALIVE_S = 15.0
JPEG = "image/jpeg"
PRIVATE = {"Cache-Control": "private, max-age=60"}


def _read(request: Request, fn, *args):
    """A store read; a store that fails answers 503 (counted, logged once a minute)."""
    dash = dashboard_of(request)
    try:
        return dash.db(fn, *args)
    except (StoreError, OSError) as exc:
        dash.store_failed(exc)
        raise HTTPException(503, f"the store is unavailable: {exc}") from exc


@router.get("/session")
def session(viewer: Viewer = Depends(require_viewer)) -> dict:
    return {"user": viewer.name, "role": viewer.role, "csrf": viewer.csrf}


@router.get("/events")
def events(request: Request, limit: int = Query(100, ge=1, le=MAX_LIMIT), camera: str | None = None,
           identity: str | None = None, min_similarity: float | None = Query(None, ge=-1.0, le=1.0),
           since: float | None = None, until: float | None = None, after_id: int | None = Query(None, ge=0),
           _viewer: Viewer = Depends(require_viewer)) -> dict:
    """Newest first. ``min_similarity`` keeps events whose similarity is at least that (events without one go). An
    event naming a visitor says whether that visitor still exists (``visitor_exists``: it can be named)."""
    query = EventQuery(since=since, until=until, camera=camera or None, identity=identity or None,
                       after_id=after_id, limit=MAX_LIMIT if min_similarity is not None else limit)
    found = _read(request, dashboard_of(request).store.events.query, query)
    if min_similarity is not None:
        found = [e for e in found if e.event.similarity is not None and e.event.similarity >= min_similarity]
    rows = [event_json(e) for e in found[:limit]]
    if any(row["visitor"] for row in rows):  # a visitor merged or expired since can no longer be named
        store = dashboard_of(request).store
        open_visitors = {v.visitor for v in _read(request, store.visitors.list)}
        for row in rows:
            if row["visitor"]:
                row["visitor_exists"] = row["name"] in open_visitors
    return {"events": rows}


@router.get("/live")
def live(request: Request, camera: str | None = None, _viewer: Viewer = Depends(require_viewer)) -> dict:
    tracks = _read(request, dashboard_of(request).store.live.alive, camera or None)
    return {"tracks": [live_json(t) for t in sorted(tracks, key=lambda t: (t.camera, -t.started_ts))]}


@router.get("/cameras")
def cameras(request: Request, _viewer: Viewer = Depends(require_viewer)) -> dict:
    dash = dashboard_of(request)
    return {"cameras": cameras_json(dash.cameras, _read(request, dash.store.live.cameras))}


def _jpeg(request: Request, fn, key, what: str) -> Response:
    try:
        data = _read(request, fn, key)
    except KeyError:
        raise HTTPException(404, f"no {what}") from None
    return Response(data, media_type=JPEG, headers=PRIVATE)


@router.get("/cameras/{camera}/preview.jpg")
def preview(request: Request, camera: str, _viewer: Viewer = Depends(require_viewer)) -> Response:
    if not is_valid_id(camera):
        raise HTTPException(404, "no such camera")
    response = _jpeg(request, dashboard_of(request).store.live.preview, camera, f"preview of {camera}")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/crops/{camera}/{track}.jpg")
def crop(request: Request, camera: str, track: int, _viewer: Viewer = Depends(require_viewer)) -> Response:
    if not is_valid_id(camera) or track < 0:
        raise HTTPException(404, "no such crop")
    return _jpeg(request, dashboard_of(request).store.media.get_crop, f"{camera}/{track}", "crop")


@router.get("/identities/{name}")
def identity(request: Request, name: str, _viewer: Viewer = Depends(require_viewer)) -> dict:
    try:
        return _read(request, identity_json, dashboard_of(request).store, name)
    except KeyError:
        raise HTTPException(404, f"the store knows nothing of {name!r}") from None


@router.get("/persons")
def persons(request: Request, _viewer: Viewer = Depends(require_viewer)) -> dict:
    store = dashboard_of(request).store

    def both():
        store.persons.sync()
        return store.persons.persons(), store.visitors.list()
    people, visitors = _read(request, both)
    return {"persons": [{"name": p.name, "faces": p.faces, "created": p.created, "last_seen": p.last_seen}
                        for p in people],
            "visitors": [{"visitor": v.visitor, "faces": v.faces, "first_seen": v.first_seen,
                          "last_seen": v.last_seen, "not": list(v.rejected)} for v in visitors]}


@router.get("/faces/{kind}/{name}/{face_id}.jpg")
def face(request: Request, kind: str, name: str, face_id: int, _viewer: Viewer = Depends(require_viewer)) -> Response:
    store = dashboard_of(request).store
    parts = {"persons": store.persons, "visitors": store.visitors, "negatives": store.negatives}
    if kind not in parts:
        raise HTTPException(404, "no such face")
    part = parts[kind]

    try:
        faces = _read(request, part.faces_of, name)
    except GalleryError as exc:  # an unknown name
        raise HTTPException(404, str(exc)) from exc
    for f in faces:
        if f.face_id == face_id:
            return Response(simplejpeg.encode_jpeg(np.ascontiguousarray(f.crop, dtype=np.uint8), quality=85,
                                                   colorspace="RGB"), media_type=JPEG, headers=PRIVATE)
    raise HTTPException(404, "no such face")


@router.get("/stream")
async def stream(request: Request, _viewer: Viewer = Depends(require_viewer)) -> StreamingResponse:
    """New events as Server-Sent Events (``event: track``, ``id:`` the log id); with ``Last-Event-ID`` the
    events after it come first, from the log."""
    dash = dashboard_of(request)
    feed = request.app.state.feed
    if len(feed.subscribers) >= dash.cfg.max_clients:
        raise HTTPException(503, f"{dash.cfg.max_clients} live clients already (dashboard.max_clients)")
    last = request.headers.get("Last-Event-ID", "")
    sub = feed.subscribe()
    backlog = []
    if last.isdigit():
        query = EventQuery(after_id=int(last), oldest_first=True, limit=MAX_LIMIT)
        backlog = await asyncio.to_thread(_read, request, dash.store.events.query, query)
    return StreamingResponse(_events(request, feed, sub, backlog), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(logged) -> str:
    return f"id: {logged.id}\nevent: track\ndata: {json.dumps(event_json(logged), separators=(',', ':'))}\n\n"


async def _events(request: Request, feed, sub, backlog) -> AsyncIterator[str]:
    dash = dashboard_of(request)
    dash.metrics.clients.inc()
    sent = 0
    try:
        yield "retry: 1000\n\n"
        for logged in backlog:
            sent = logged.id
            yield _sse(logged)
        while True:
            try:
                logged = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            if logged is None:  # fell behind: the browser reconnects with its last id
                dash.metrics.lagged.inc()
                return
            if logged.id > sent:
                sent = logged.id
                yield _sse(logged)
    finally:
        feed.unsubscribe(sub)
        dash.metrics.clients.dec()
