"""The JSON API's reads (every route needs a session; 401 without): events, live tracks, cameras and their
previews, crops, identities with their timelines and faces, and the live stream (Server-Sent Events).

Reads of one person's data are audited (`Dashboard.record_read`: one ``read`` record per user, subject and kind a
minute): an identity's timeline (``/api/identities/NAME``, ``/api/events?identity=NAME``), its faces, and the crop
of a track that carried a name (its subjects: the names the track's events carry; a crop of a track nobody was
named on is not audited). A read whose record cannot be written is refused (503). The live stream re-checks its
session every ``RECHECK_S``: a logout, a password change or the user's removal ends it within that."""

from __future__ import annotations

import asyncio
import json
from typing import AsyncIterator

import numpy as np
import simplejpeg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from dashboard.auth import COOKIE
from dashboard.guard import Viewer, dashboard_of, require_viewer, viewer_from_cookie
from dashboard.timeline import identity_json
from dashboard.views import cameras_json, event_json, live_json
from identity.corrections import track_names
from shared.errors import GalleryError, InputError, StoreError
from shared.ids import is_valid_id
from store.types import EventQuery

router = APIRouter(prefix="/api")
MAX_LIMIT = 1000
KEEPALIVE_S = 15.0
RECHECK_S = 1.0
JPEG = "image/jpeg"
PRIVATE = {"Cache-Control": "no-store"}  # faces and crops: no cache keeps them
QUIET = object()  # nothing came within RECHECK_S


def _read(request: Request, fn, *args):
    """A store read; a store that fails answers 503 (counted, logged once a minute)."""
    dash = dashboard_of(request)
    try:
        return dash.db(fn, *args)
    except (StoreError, OSError) as exc:
        dash.store_failed(exc)
        raise HTTPException(503, f"the store is unavailable: {exc}") from exc


def _audit(request: Request, viewer: Viewer, kind: str, subjects: set[str], **details: object) -> None:
    """The read of ``kind`` of ``subjects`` in the audit log; 503 when it cannot be written."""
    dash = dashboard_of(request)
    try:
        dash.record_read(viewer.name, kind, subjects, **details)
    except (StoreError, OSError) as exc:
        dash.store_failed(exc)
        raise HTTPException(503, f"the audit log is unavailable, so this read is refused: {exc}") from exc


@router.get("/session")
def session(viewer: Viewer = Depends(require_viewer)) -> dict:
    return {"user": viewer.name, "role": viewer.role, "csrf": viewer.csrf}


@router.get("/events")
def events(request: Request, limit: int = Query(100, ge=1, le=MAX_LIMIT), camera: str | None = None,
           identity: str | None = None, min_similarity: float | None = Query(None, ge=-1.0, le=1.0),
           since: float | None = None, until: float | None = None, after_id: int | None = Query(None, ge=0),
           viewer: Viewer = Depends(require_viewer)) -> dict:
    """Newest first. ``min_similarity`` keeps events whose similarity is at least that (events without one go). An
    event naming a visitor says whether that visitor still exists (``visitor_exists``: it can be named)."""
    query = EventQuery(since=since, until=until, camera=camera or None, identity=identity or None,
                       after_id=after_id, limit=MAX_LIMIT if min_similarity is not None else limit)
    if identity:
        _audit(request, viewer, "timeline", {identity})
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
def crop(request: Request, camera: str, track: int, viewer: Viewer = Depends(require_viewer)) -> Response:
    if not is_valid_id(camera) or track < 0:
        raise HTTPException(404, "no such crop")
    dash = dashboard_of(request)
    response = _jpeg(request, dash.store.media.get_crop, f"{camera}/{track}", "crop")
    if dash.audit is not None and dash.fresh_read(viewer.name, "crop", f"{camera}/{track}"):
        try:
            names = _read(request, track_names, dash.store, camera, track)
            _audit(request, viewer, "crop", names, camera=camera, track=track)
        except HTTPException:
            dash.forget_read(viewer.name, "crop", f"{camera}/{track}")
            raise
    return response


@router.get("/identities/{name}")
def identity(request: Request, name: str, viewer: Viewer = Depends(require_viewer)) -> dict:
    try:
        found = _read(request, identity_json, dashboard_of(request).store, name)
    except KeyError:
        raise HTTPException(404, f"the store knows nothing of {name!r}") from None
    _audit(request, viewer, "timeline", {name})
    return found


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
def face(request: Request, kind: str, name: str, face_id: int, viewer: Viewer = Depends(require_viewer)) -> Response:
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
            _audit(request, viewer, "faces", {name}, part=kind)
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
    cookie = request.cookies.get(COOKIE)
    return StreamingResponse(_events(request, feed, sub, backlog, cookie), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(logged) -> str:
    return f"id: {logged.id}\nevent: track\ndata: {json.dumps(event_json(logged), separators=(',', ':'))}\n\n"


def _still_valid(dash, cookie: str | None) -> bool:
    """Whether the stream's session still holds (not logged out, password unchanged, user not removed)."""
    try:
        return viewer_from_cookie(dash, cookie) is not None
    except InputError as exc:  # the users file became unreadable: no session can be checked
        dash.warn("users_file", "live stream closed: %s", exc)
        return False


async def _events(request: Request, feed, sub, backlog, cookie: str | None) -> AsyncIterator[str]:
    """The stream's lines; it ends when the client falls behind, or within RECHECK_S of its session's end."""
    dash = dashboard_of(request)
    dash.metrics.clients.inc()
    sent = 0
    loop = asyncio.get_running_loop()
    checked = quiet_since = loop.time()
    try:
        yield "retry: 1000\n\n"
        for logged in backlog:
            sent = logged.id
            yield _sse(logged)
        while True:
            try:
                logged = await asyncio.wait_for(sub.queue.get(), RECHECK_S)
            except asyncio.TimeoutError:
                logged = QUIET
            if loop.time() - checked >= RECHECK_S:
                if not _still_valid(dash, cookie):
                    return
                checked = loop.time()
            if logged is QUIET:
                if loop.time() - quiet_since >= KEEPALIVE_S:
                    quiet_since = loop.time()
                    yield ": keepalive\n\n"
                continue
            if logged is None:  # fell behind: the browser reconnects with its last id
                dash.metrics.lagged.inc()
                return
            if logged.id > sent:
                sent = logged.id
                quiet_since = loop.time()
                yield _sse(logged)
    finally:
        feed.unsubscribe(sub)
        dash.metrics.clients.dec()
