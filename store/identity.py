"""Identity operations that span the store's parts, written once over the interface (every backend gets them).

- ``promote_visitor``: an operator names a visitor; its faces join the person gallery under that name.
- ``merge_visitor``: a track that was a visitor is recognised as an enrolled person; the visitor's faces stop
  answering as a visitor (they are not added to the person: a tracked face is not an enrolment).
Both record the merge (the visitor's name resolves to the person) and point the visitor's past events and live
tracks to the person; a merge is also an audit record (an operator's promote is audited by the command that asked). Order: the person side first, the visitor's removal last, so a crash in between leaves a
duplicate, never a loss.

- ``remove_person``: an operator removes an enrolled person (`argusnet gallery remove`, the dashboard); their
  negative evidence goes with them (faces kept as NOT them say nothing once nobody is named so).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import GalleryError
from store.base import Store
from store.types import FaceSample, is_visitor_name


@dataclass(frozen=True)
class MergeReport:
    """What a promote or merge changed: faces added to the person, faces removed from the visitor, events and live
    tracks renamed."""

    visitor: str
    person: str
    faces_added: int
    faces_removed: int
    events: int
    live_tracks: int


@dataclass(frozen=True)
class RemovedPerson:
    """What ``remove_person`` removed: the person's faces and the negative faces kept for them."""

    name: str
    faces: int
    negatives: int


def _check_names(visitor: str, person: str) -> None:
    if not is_visitor_name(visitor):
        raise GalleryError(f"{visitor!r} is not a visitor id (visitor-N)")
    if not person.strip() or is_visitor_name(person.strip()):
        raise GalleryError(f"a person's name must not be empty or a visitor id, got {person!r}")


def promote_visitor(store: Store, visitor: str, name: str) -> MergeReport:
    """An operator names ``visitor``: its faces are enrolled as ``name`` (GalleryError when it is unknown)."""
    _check_names(visitor, name)
    faces = store.visitors.faces_of(visitor)
    added = store.persons.add_person(name.strip(), [FaceSample(f.embedding, f.crop, f.landmarks, f.source)
                                                    for f in faces])
    return _finish(store, visitor, name.strip(), len(added))


def merge_visitor(store: Store, visitor: str, person: str, actor: str = "worker") -> MergeReport:
    """``visitor`` turned out to be the enrolled ``person`` (a worker decided it: ``actor``). The merge is an audit
    record (``merge``, subject ``person``), appended after the merge is made."""
    _check_names(visitor, person)
    report = _finish(store, visitor, person, 0)
    store.audit.append(actor=actor, action="merge", subject=person,
                       details={"visitor": visitor, "faces_removed": report.faces_removed, "events": report.events})
    return report


def _finish(store: Store, visitor: str, person: str, added: int) -> MergeReport:
    events = store.events.rename_identity(visitor, person)
    live = store.live.rename_identity(visitor, person)
    removed = store.visitors.merge(visitor, person)
    return MergeReport(visitor, person, added, removed, events, live)


def remove_person(store: Store, name: str) -> RemovedPerson:
    """Remove the enrolled ``name`` with all their faces, then their negative evidence (GalleryError, nothing
    changed, when nobody is enrolled so). A crash in between leaves negative evidence for nobody, which
    `argusnet forget` (or the same removal after a new enrolment) erases."""
    faces = store.persons.remove_person(name)
    return RemovedPerson(name, faces, store.negatives.erase(name))
