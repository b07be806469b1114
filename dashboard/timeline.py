"""One identity's page: where and when it was seen (one span per track, across cameras, newest first), its
stored faces and, for a person, the negative evidence operators gave ("not this person")."""

from __future__ import annotations

from urllib.parse import quote

from dashboard.views import crop_url, event_json
from shared.errors import GalleryError
from store.base import Store
from store.types import EventQuery, LoggedEvent, is_visitor_name

TIMELINE_EVENTS = 2000


def spans(events: list[LoggedEvent]) -> list[dict]:
    """One entry per (camera, track): first and last capture time, best similarity, its crop."""
    by_track: dict[tuple[str, int], dict] = {}
    for logged in events:
        e = logged.event
        span = by_track.setdefault((e.camera, e.track), {"camera": e.camera, "track": e.track, "first": e.capture_ts,
                                                          "last": e.capture_ts, "similarity": None, "events": 0,
                                                          "crop_url": crop_url(f"{e.camera}/{e.track}")})
        span["first"], span["last"] = min(span["first"], e.capture_ts), max(span["last"], e.capture_ts)
        span["events"] += 1
        if e.similarity is not None and (span["similarity"] is None or e.similarity > span["similarity"]):
            span["similarity"] = e.similarity
    return sorted(by_track.values(), key=lambda s: -s["last"])


def identity_json(store: Store, name: str) -> dict:
    """KeyError when the store knows nothing of ``name``. A visitor's ``kind`` is "visitor" only while it exists
    (faces kept); "merged" once merged into a person (``merged_into``; ``unmerge``: whether an unmerge can undo it,
    ``unmerge_blocked``: why not), "expired" when only its events are left."""
    events = store.events.query(EventQuery(identity=name, limit=TIMELINE_EVENTS))
    visitor = is_visitor_name(name)
    part = store.visitors if visitor else store.persons
    if not visitor:
        store.persons.sync()
    try:
        faces = part.faces_of(name)
    except GalleryError:
        faces = []
    negatives = [] if visitor else store.negatives.faces_of(name)
    merged_into = store.visitors.merged_into(name) if visitor else None
    if not faces and not events and not negatives and merged_into is None:
        raise KeyError(name)
    base = "visitors" if visitor else "persons"
    out = {"name": name, "kind": _kind(visitor, bool(faces), merged_into), "merged_into": merged_into,
           "faces": [{"face_id": f.face_id, "source": f.source, "created": f.created,
                      "url": f"/api/faces/{base}/{_q(name)}/{f.face_id}.jpg"} for f in faces],
           "negatives": [{"face_id": f.face_id, "source": f.source, "created": f.created,
                          "url": f"/api/faces/negatives/{_q(name)}/{f.face_id}.jpg"} for f in negatives],
           "timeline": spans(events), "events": [event_json(e) for e in events[:200]]}
    if merged_into is not None:
        undo = store.visitors.merge_undo(name)
        blocked = "the merge kept nothing to undo it with" if undo is None else undo.blocked
        out.update(unmerge=blocked is None, unmerge_blocked=blocked)
    return out


def _kind(visitor: bool, has_faces: bool, merged_into: str | None) -> str:
    if not visitor:
        return "person" if has_faces else "former"
    if has_faces:
        return "visitor"
    return "merged" if merged_into is not None else "expired"


def _q(text: str) -> str:
    return quote(text, safe="")
