"""The admin actions, as POSTs on the API (admin role and the session's CSRF token; each one recorded in the audit
log with the dashboard user as the actor):

- ``POST /api/visitors/{visitor}/name`` ``{"name"}``: the visitor is that person (its faces join the gallery, its
  past events name the person), as `argusnet visitors name`;
- ``POST /api/visitors/{visitor}/unmerge``: undo the visitor's merge into a person (or its naming): its faces, and
  exactly the events and live tracks the merge renamed, are the visitor's again, the faces a naming added to the
  person go (`identity.merges.unmerge_visitor`, which appends the audit record ``unmerge``); 400 saying why when it
  was never merged or can no longer be undone;
- ``POST /api/tracks/{camera}/{track}/reject`` ``{"name"}``: "not this person", as `argusnet tracks reject`: the
  track's stored face becomes negative evidence for NAME (workers then name no face nearer to it than to NAME's
  own faces as NAME, and a live track of it loses the name), its events stop naming NAME, and a visitor it
  carried is recorded as not NAME (`identity.corrections.reject_track`);
- ``POST /api/tracks/{camera}/{track}/confirm`` ``{"name"}``: "yes, this is NAME": the track's stored best face is
  enrolled as one more face of NAME through the same quality gate as `argusnet enroll` (the reasons shown when it
  is refused), so NAME is recognised better from then on;
- ``POST /api/persons`` (multipart ``name``, ``photos``): enrol a person from uploaded photos (`argusnet enroll`,
  whose quality-gate reasons come back as they are);
- ``POST /api/persons/{name}/remove``: remove the person, their faces and their negative evidence (`argusnet
  gallery remove`, `identity.merges.remove_person`);
- ``POST /api/persons/{name}/negatives/{face_id}/remove``: take one negative face back (`argusnet gallery
  negatives NAME --remove FACE_ID`).

Enrolment and "not this person" run the `argusnet enroll` and `argusnet tracks reject` commands in a child process:
the dashboard loads no model and imports nothing from the worker, and a face goes through exactly the code path of
the command line.
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
from identity.corrections import remove_negative, track_names
from identity.merges import promote_visitor, remove_person, unmerge_visitor
from shared.errors import GalleryError, StoreError
from shared.ids import is_valid_id
from shared.names import name_problem
from store.audit import ACTOR_ENV

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


def _check_track(camera: str, track: int) -> None:
    if not is_valid_id(camera) or track < 0:
        raise HTTPException(404, "no such track")


@router.post("/tracks/{camera}/{track}/reject")
def reject(request: Request, camera: str, track: int, body: NameBody, viewer: Viewer = Depends(_admin)) -> dict:
    """"Not this person": `argusnet tracks reject` (it embeds the track's stored face as negative evidence, unnames
    the track's events, marks its visitor and writes the audit record as this user)."""
    _check_track(camera, track)
    dash = dashboard_of(request)
    result = run_cli(dash, viewer, ["tracks", "reject", "--json", "--", camera, str(track), body.name])
    dash.metrics.actions.labels(action="reject").inc()
    return result


def run_cli(dash: Dashboard, viewer: Viewer, words: list[str]) -> dict:
    """One `argusnet` command on the dashboard's store as ``viewer`` (its audit actor): its JSON answer; 404 with
    the command's message when it refuses the input (exit 2), 500 otherwise."""
    env = {**os.environ, ACTOR_ENV: viewer.actor}
    try:
        done = subprocess.run(dash.cli.command(*words[:2]) + words[2:], capture_output=True, text=True,
                              timeout=ENROL_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        raise HTTPException(504, f"`argusnet {' '.join(words[:2])}` took longer than {ENROL_TIMEOUT_S:.0f} s") from exc
    if done.returncode != 0:
        reasons = [line.strip() for line in done.stderr.splitlines() if line.startswith("argusnet:")]
        raise HTTPException(404 if done.returncode == 2 else 500, "; ".join(reasons) or done.stderr[-500:])
    return json.loads(done.stdout)


@router.post("/persons/{name}/negatives/{face_id}/remove")
def take_back_negative(request: Request, name: str, face_id: int, viewer: Viewer = Depends(_admin)) -> dict:
    """An operator takes one negative face of ``name`` back (audited as this user)."""
    dash = dashboard_of(request)
    if not _change(request, remove_negative, dash.store, name, face_id, viewer.actor):
        raise HTTPException(404, f"{name!r} has no negative face {face_id}")
    dash.metrics.actions.labels(action="remove_negative").inc()
    return {"name": name, "removed": face_id}


@router.post("/tracks/{camera}/{track}/confirm")
def confirm(request: Request, camera: str, track: int, body: NameBody, viewer: Viewer = Depends(_admin)) -> dict:
    _check_track(camera, track)
    dash = dashboard_of(request)
    if body.name not in _change(request, track_names, dash.store, camera, track):
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
        command = [*dash.cli.command("enroll"), "--json", "--", name, *paths]
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
    problem = name_problem(name.strip())
    if problem is not None:
        raise HTTPException(422, {"refused": [f"not a valid person's name: {problem}"]})
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
    removed = _change(request, remove_person, dash.store, name)
    dash.record(viewer.actor, "remove", name, faces=removed.faces, negatives=removed.negatives)
    dash.metrics.actions.labels(action="remove").inc()
    return {"name": name, "faces_removed": removed.faces, "negatives_removed": removed.negatives}
