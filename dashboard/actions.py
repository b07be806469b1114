"""The admin actions, as POSTs on the API (admin role and the session's CSRF token; each one recorded in the audit
log with the dashboard user as the actor):

- ``POST /api/visitors/{visitor}/name`` ``{"name"}``: the visitor is that person (its faces join the gallery, its
  past events name the person), as `argusnet visitors name`;
- ``POST /api/visitors/{visitor}/unmerge``: undo the visitor's merge into a person (or its naming): its faces, and
  exactly the events and live tracks the merge renamed, are the visitor's again, the faces a naming added to the
  person go (`store.identity.unmerge_visitor`, which appends the audit record ``unmerge``); 400 saying why when it
  was never merged or can no longer be undone;
- ``POST /api/tracks/{camera}/{track}/reject`` ``{"name"}``: "not this person": the track's naming is withdrawn
  from the event history (`EventLog.unname_track`); when the track also carried a visitor that still exists, that
  visitor is recorded as not NAME, so the workers never name it so again;
- ``POST /api/tracks/{camera}/{track}/confirm`` ``{"name"}``: "yes, this is NAME": the track's stored best face is
  enrolled as one more face of NAME through the same quality gate as `argusnet enroll` (the reasons shown when it
  is refused), so NAME is recognised better from then on;
- ``POST /api/persons`` (multipart ``name``, ``photos``): enrol a person from uploaded photos (`argusnet enroll`,
  whose quality-gate reasons come back as they are);
- ``POST /api/persons/{name}/remove``: remove the person and their faces (`argusnet gallery remove`).

Enrolment runs the `argusnet enroll` command in a child process: the dashboard loads no model and imports nothing
from the worker, and a photo goes through exactly the code path of the command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from dashboard.context import Dashboard
from dashboard.guard import Viewer, dashboard_of, require_change
from shared.errors import GalleryError, StoreError
from shared.ids import is_valid_id
from store.audit import ACTOR_ENV
from store.identity import promote_visitor, unmerge_visitor
from store.types import EventQuery, is_visitor_name

router = APIRouter(prefix="/api")
ENROL_TIMEOUT_S = 300.0
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class NameBody(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="A person's name.")


def _admin(request: Request) -> Viewer:
    return require_change(request)


def _change(request: Request, fn, *args):
    dash = dashboard_of(request)
    try:
        return dash.db(fn, *args)
    except GalleryError as exc:  # an unknown visitor or person, a bad name: the operator's input
        raise HTTPException(400, str(exc)) from exc
    except (StoreError, OSError) as exc:
        dash.store_failed(exc)
        raise HTTPException(503, f"the store is unavailable: {exc}") from exc


@router.post("/visitors/{visitor}/name")
def name_visitor(request: Request, visitor: str, body: NameBody, viewer: Viewer = Depends(_admin)) -> dict:
    dash = dashboard_of(request)
    report = _change(request, promote_visitor, dash.store, visitor, body.name.strip())
    dash.record(viewer.actor, "name_visitor", body.name.strip(), visitor=visitor, faces=report.faces_added)
    dash.metrics.actions.labels(action="name_visitor").inc()
    return {"visitor": visitor, "name": body.name.strip(), "faces_added": report.faces_added,
            "events_renamed": report.events}


@router.post("/visitors/{visitor}/unmerge")
def unmerge(request: Request, visitor: str, viewer: Viewer = Depends(_admin)) -> dict:
    dash = dashboard_of(request)
    report = _change(request, unmerge_visitor, dash.store, visitor, viewer.actor)  # audited by unmerge_visitor
    dash.metrics.actions.labels(action="unmerge").inc()
    return report.to_json()


def _track_names(dash: Dashboard, camera: str, track: int) -> set[str]:
    """The names a track's events carry (and visitors its naming merged)."""
    events = [e.event for e in dash.store.events.query(EventQuery(camera=camera, limit=2000)) if e.event.track == track]
    return {n for e in events for n in (e.name, e.merged_visitor) if n is not None}


def _check_track(camera: str, track: int) -> None:
    if not is_valid_id(camera) or track < 0:
        raise HTTPException(404, "no such track")


@router.post("/tracks/{camera}/{track}/reject")
def reject(request: Request, camera: str, track: int, body: NameBody, viewer: Viewer = Depends(_admin)) -> dict:
    _check_track(camera, track)
    dash = dashboard_of(request)

    def run() -> tuple[int, list[str]]:
        visitors = sorted(n for n in _track_names(dash, camera, track) if is_visitor_name(n) and n != body.name)
        changed = dash.store.events.unname_track(camera, track, body.name)
        recorded = []
        for visitor in visitors:
            try:
                dash.store.visitors.reject(visitor, body.name)
                recorded.append(visitor)
            except GalleryError:  # the visitor expired or was merged meanwhile: nothing left to mark
                continue
        return changed, recorded
    changed, visitors = _change(request, run)
    if not changed:
        raise HTTPException(404, f"track {camera}/{track} has no event naming {body.name!r}")
    dash.record(viewer.actor, "reject", body.name, camera=camera, track=track, events=changed)
    dash.metrics.actions.labels(action="reject").inc()
    return {"camera": camera, "track": track, "not": body.name, "events_unnamed": changed, "visitors": visitors}


@router.post("/tracks/{camera}/{track}/confirm")
def confirm(request: Request, camera: str, track: int, body: NameBody, viewer: Viewer = Depends(_admin)) -> dict:
    _check_track(camera, track)
    dash = dashboard_of(request)
    if body.name not in _change(request, _track_names, dash, camera, track):
        raise HTTPException(404, f"track {camera}/{track} was never named {body.name!r}")
    try:
        jpeg = _change(request, dash.store.media.get_crop, f"{camera}/{track}")
    except KeyError:
        raise HTTPException(404, f"track {camera}/{track} has no stored face (yet)") from None
    result = run_enrol(dash, viewer, body.name, [(f"{camera}-{track}.jpg", jpeg)])
    dash.record(viewer.actor, "confirm", body.name, camera=camera, track=track)
    dash.metrics.actions.labels(action="confirm").inc()
    return result


def run_enrol(dash: Dashboard, viewer: Viewer, name: str, photos: list[tuple[str, bytes]]) -> dict:
    """`argusnet enroll` on the photos (written to a private temporary folder); 422 with the command's reasons
    when it refuses them."""
    with tempfile.TemporaryDirectory(prefix="argusnet-enrol-") as tmp:
        paths = []
        for i, (filename, data) in enumerate(photos):
            suffix = Path(filename).suffix.lower()
            path = Path(tmp) / f"{i:03d}{suffix if suffix in PHOTO_SUFFIXES else '.jpg'}"
            path.write_bytes(data)
            paths.append(str(path))
        command = [*dash.enrol_command, "--json", "--", name, *paths]
        env = {**os.environ, ACTOR_ENV: viewer.actor}
        done = subprocess.run(command, capture_output=True, text=True, timeout=ENROL_TIMEOUT_S, env=env)
    reasons = [line.replace(tmp, "").strip() for line in done.stderr.splitlines()
               if line.startswith(("refused", "argusnet:"))]
    if done.returncode != 0:
        raise HTTPException(422 if done.returncode == 2 else 500, {"refused": reasons or [done.stderr[-500:]]})
    return json.loads(done.stdout)


@router.post("/persons")
async def enrol(request: Request, name: str = Form(..., min_length=1, max_length=200),
                photos: list[UploadFile] = File(...), csrf_token: str | None = Form(None)) -> dict:
    viewer = require_change(request, csrf_token)
    dash = dashboard_of(request)
    data, total = [], 0
    for photo in photos:
        content = await photo.read()
        total += len(content)
        if total > dash.cfg.max_upload_bytes:
            raise HTTPException(413, f"photos larger than dashboard.max_upload_bytes ({dash.cfg.max_upload_bytes})")
        data.append((photo.filename or "photo.jpg", content))
    result = await run_in_threadpool(run_enrol, dash, viewer, name.strip(), data)
    dash.metrics.actions.labels(action="enrol").inc()
    return result


@router.post("/persons/{name}/remove")
def remove(request: Request, name: str, viewer: Viewer = Depends(_admin)) -> dict:
    dash = dashboard_of(request)
    faces = _change(request, dash.store.persons.remove_person, name)
    dash.record(viewer.actor, "remove", name, faces=faces)
    dash.metrics.actions.labels(action="remove").inc()
    return {"name": name, "faces_removed": faces}
