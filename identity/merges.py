"""Identity operations that span the store's parts, written once over the interface (every backend gets them).

- ``promote_visitor``: an operator names a visitor; its faces join the person gallery under that name.
- ``merge_visitor``: a track that was a visitor is recognised as an enrolled person; the visitor's faces stop
  answering as a visitor (they are not added to the person: a tracked face is not an enrolment).
- ``unmerge_visitor``: undo either (a merge made by mistake: a tracker switched people): the visitor's faces answer
  as the visitor again, exactly the events and live tracks the merge renamed name the visitor again, the faces a
  promote added to the person go, and the merge record goes.
Both record the merge (the visitor's name resolves to the person) and point the visitor's past events and live
tracks to the person; a merge is also an audit record (an operator's promote is audited by the command that asked). Order: the person side first, the visitor's removal last, so a crash in between leaves a
duplicate, never a loss. The merge keeps what an unmerge needs (`VisitorStore.merge_undo`); an unmerge undoes the
events, live tracks and person faces first and restores the visitor (dropping the merge record) last, each step
taking only what is still there, so an unmerge that stopped half-way is finished by running it again.

- ``remove_person``: an operator removes an enrolled person (`argusnet gallery remove`, the dashboard); their
  negative evidence goes with them (faces kept as NOT them say nothing once nobody is named so).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shared.errors import GalleryError
from shared.names import check_person_name
from store.base import Store
from store.types import FaceSample, MergeUndo, is_visitor_name


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


@dataclass(frozen=True)
class UnmergeReport:
    """What an unmerge restored: the visitor's faces back in the visitor gallery, the faces a promote had added that
    left the person, events and live tracks naming the visitor again."""

    visitor: str
    person: str
    faces_restored: int
    person_faces_removed: int
    events: int
    live_tracks: int

    def to_json(self) -> dict:
        return asdict(self)


def _check_names(visitor: str, person: str) -> None:
    if not is_visitor_name(visitor):
        raise GalleryError(f"{visitor!r} is not a visitor id (visitor-N)")
    check_person_name(person.strip())


def promote_visitor(store: Store, visitor: str, name: str) -> MergeReport:
    """An operator names ``visitor``: its faces are enrolled as ``name`` (GalleryError when it is unknown)."""
    _check_names(visitor, name)
    into = store.visitors.merged_into(visitor)
    if into is not None:
        raise GalleryError(f"{visitor} was merged into {into} already (`argusnet visitors unmerge {visitor}` undoes "
                           "that)")
    faces = store.visitors.faces_of(visitor)
    added = store.persons.add_person(name.strip(), [FaceSample(f.embedding, f.crop, f.landmarks, f.source)
                                                    for f in faces])
    return _finish(store, visitor, name.strip(), added)


def merge_visitor(store: Store, visitor: str, person: str, actor: str = "worker") -> MergeReport:
    """``visitor`` turned out to be the enrolled ``person`` (a worker decided it: ``actor``). The merge is an audit
    record (``merge``, subject ``person``), appended after the merge is made."""
    _check_names(visitor, person)
    report = _finish(store, visitor, person, [])
    store.audit.append(actor=actor, action="merge", subject=person,
                       details={"visitor": visitor, "faces_removed": report.faces_removed, "events": report.events})
    return report


def _finish(store: Store, visitor: str, person: str, added: list[int]) -> MergeReport:
    events = store.events.rename_identity(visitor, person)
    live = store.live.rename_tracks(visitor, person)
    removed = store.visitors.merge(visitor, person, person_faces=added, live_tracks=live)
    return MergeReport(visitor, person, len(added), removed, events, len(live))


def _undoable(store: Store, visitor: str) -> MergeUndo:
    """What the merge of ``visitor`` kept, when it can be undone; else GalleryError saying why not."""
    if not is_visitor_name(visitor):
        raise GalleryError(f"{visitor!r} is not a visitor id (visitor-N)")
    into = store.visitors.merged_into(visitor)
    undo = store.visitors.merge_undo(visitor)
    if into is None:
        raise GalleryError(f"{visitor} is not merged into anyone: there is nothing to unmerge")
    if undo is None:
        raise GalleryError(f"the merge of {visitor} into {into} cannot be undone: it kept nothing to undo it with "
                           "(made by an older ArgusNet, or copied by `argusnet store migrate`, or its visitor was "
                           "already gone when it was merged)")
    if undo.person != into:
        raise GalleryError(f"the merge of {visitor} into {undo.person} cannot be undone: {visitor} was merged again "
                           f"since, into {into}")
    if undo.blocked is not None:
        raise GalleryError(f"the merge of {visitor} into {into} can no longer be undone: {undo.blocked}")
    return undo


def unmerge_visitor(store: Store, visitor: str, actor: str | None = None) -> UnmergeReport:
    """Undo the merge (or promote) of ``visitor`` (GalleryError, nothing changed, when it was never merged or its
    merge can no longer be undone); an audit record ``unmerge`` (subject: the person; ``actor``: who asked, default
    the CLI user) is appended once it is done."""
    undo = _undoable(store, visitor)
    events = store.events.restore_identity(visitor, undo.person)
    live = store.live.restore_tracks(undo.live_tracks, visitor, undo.person)
    removed = store.persons.remove_faces(undo.person, undo.person_faces) if undo.person_faces else 0
    restored = store.visitors.unmerge(visitor)
    report = UnmergeReport(visitor, undo.person, restored, removed, events, live)
    store.audit.append(actor=actor, action="unmerge", subject=undo.person,
                       details={"visitor": visitor, "faces_restored": restored, "person_faces_removed": removed,
                                "events": events, "live_tracks": live})
    return report


def remove_person(store: Store, name: str) -> RemovedPerson:
    """Remove the enrolled ``name`` with all their faces, then their negative evidence (GalleryError, nothing
    changed, when nobody is enrolled so). A crash in between leaves negative evidence for nobody, which
    `argusnet forget` (or the same removal after a new enrolment) erases."""
    faces = store.persons.remove_person(name)
    return RemovedPerson(name, faces, store.negatives.erase(name))
