"""Operators' corrections that stick: "not this person" on a track, and negative evidence kept per person.

``reject_track``: the track's faces become negative evidence for the person (`store.base.NegativeStore`), tagged
with the track (``track_source``); its logged events stop naming him (started, identified, ended: the event log's
``unname_track``); a visitor the track carried is recorded as not him; the correction is an audit record. Workers
pick the negative evidence up at their next sync: from then on a face at least as similar to a person's negative
faces as to his own is not named as him (`identity.decision.without_contradicted`), and a live track whose
faces an operator rejected loses the name at once (and its later events do not carry it).

``remove_negative``: an operator takes one negative face back (audited).

A visitor that the wrong naming merged into the person is unmerged (`identity.merges.unmerge_visitor`) and then
recorded as not him."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from identity.merges import unmerge_visitor
from shared.errors import GalleryError
from store.base import Store
from store.types import EventQuery, FaceSample, is_visitor_name

TRACK_EVENTS_LIMIT = 2000  # a track's events are looked for among its camera's latest this many


def track_source(camera: str, track: int) -> str:
    """How a face taken from a track names where it came from (the worker's kept faces use the same form)."""
    return f"camera:{camera}/track:{track}"


@dataclass(frozen=True)
class RejectReport:
    """What "not this person" changed: events no longer naming ``name``, negative faces added, visitors marked as
    not him, and visitors whose merge into him (made by this wrong naming) was undone."""

    camera: str
    track: int
    name: str
    events_unnamed: int
    negatives_added: int
    visitors: tuple[str, ...]
    unmerged: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"camera": self.camera, "track": self.track, "not": self.name, "events_unnamed": self.events_unnamed,
                "negatives_added": self.negatives_added, "visitors": list(self.visitors),
                "unmerged": list(self.unmerged)}


def track_names(store: Store, camera: str, track: int) -> set[str]:
    """The names a track's logged events carry (and the visitors its naming merged)."""
    events = [e.event for e in store.events.query(EventQuery(camera=camera, limit=TRACK_EVENTS_LIMIT))
              if e.event.track == track]
    return {n for e in events for n in (e.name, e.merged_visitor) if n is not None}


def reject_track(store: Store, camera: str, track: int, name: str, faces: Sequence[FaceSample],
                 actor: str | None = None) -> RejectReport:
    """Track ``camera``/``track`` is not ``name`` (see the module docstring). ``faces``: the track's faces (the
    stored best face, embedded), kept as negative evidence. A visitor the wrong naming merged into ``name`` is
    unmerged first (when the merge can still be undone). GalleryError when the track never carried that name or
    the name is a visitor id (a visitor is corrected with `argusnet visitors reject`). Running it again after a
    failure half-way finishes it. ``actor``: who, for the audit log (None: `store.audit.default_actor`)."""
    if is_visitor_name(name):
        raise GalleryError(f"{name!r} is a visitor id: use `argusnet visitors reject VISITOR NAME`")
    names = track_names(store, camera, track)
    source = track_source(camera, track)
    kept = source in rejected_tracks(store, name)  # an earlier run got this far
    if name not in names and not kept:
        raise GalleryError(f"track {camera}/{track} has no event naming {name!r}")
    added = [] if kept or not faces else \
        store.negatives.add(name, [FaceSample(f.embedding, f.crop, f.landmarks, source) for f in faces])
    unmerged = tuple(_unmerge_wrong(store, names, name, actor))
    changed = store.events.unname_track(camera, track, name)
    marked = []
    for visitor in sorted(n for n in names if is_visitor_name(n)):
        if store.visitors.merged_into(visitor) is None and _visitor_exists(store, visitor):
            store.visitors.reject(visitor, name)
            marked.append(visitor)
    report = RejectReport(camera, track, name, changed, len(added), tuple(marked), unmerged)
    store.audit.append(actor=actor, action="reject", subject=name,
                       details={"camera": camera, "track": track, "events": changed, "negatives": len(added),
                                "unmerged": list(unmerged)})
    return report


def _unmerge_wrong(store: Store, names: set[str], name: str, actor: str | None) -> list[str]:
    """Undo the merges into ``name`` of the visitors among ``names`` (the wrong naming made them)."""
    undone = []
    for visitor in sorted(n for n in names if is_visitor_name(n) and store.visitors.merged_into(n) == name):
        undo = store.visitors.merge_undo(visitor)
        if undo is not None and undo.person == name and undo.blocked is None:
            unmerge_visitor(store, visitor, actor)
            undone.append(visitor)
    return undone


def _visitor_exists(store: Store, visitor: str) -> bool:
    try:
        store.visitors.faces_of(visitor)
    except GalleryError:  # expired: nothing left to mark
        return False
    return True


def rejected_tracks(store: Store, person: str) -> set[str]:
    """The ``track_source`` of every track an operator said is not ``person``."""
    return {f.source for f in store.negatives.faces_of(person)}


def remove_negative(store: Store, person: str, face_id: int, actor: str | None = None) -> bool:
    """Take one negative face of ``person`` back (audited); False when there is no such face."""
    removed = store.negatives.remove_face(person, face_id)
    if removed:
        store.audit.append(actor=actor, action="remove_negative", subject=person, details={"face": face_id})
    return removed
