"""Erasure of one identity everywhere a store keeps it, written once over the store interface (`store.base`).

``forget(store, name)`` erases a person or ``visitor-N``: their faces in the person gallery, their negative evidence
(faces kept as NOT them, `store.negatives`), their visitor faces and the rejections recorded for them, rejections
naming them, merges into or from them (with the faces those merges kept aside for an unmerge, counted as visitor
faces), every event naming them (events are deleted, not anonymised: an event is a sighting of the person), the
crops those events and their live tracks hold, and their live tracks. Then the audit log records the forget
(`store.audit`: the record keeps only the subject's opaque id, and the name leaves the subject mapping). Last,
``Store.finish_erasure`` rewrites what still holds deleted bytes (the local index files and SQLite WALs; every Redis
gallery's change stream and the server's append-only file and snapshot; the Redis event stream, withdrawn events
included, is rewritten by the event log itself). A name the store holds nothing
of is refused with `GalleryError` before anything changes.

Order: a tombstone of the name first (`store.erasures`: writes a worker buffered during an outage that name the
person are dropped when it flushes them, never written back), live tracks (they stop showing), then events and
their crops, references, visitor faces, negative evidence, person faces last; every step deletes what is there,
so a forget that stopped half-way is finished by running it again. A worker that is tracking the person right now
writes their live track and events again: forget while they are off camera, or run it again.

``erase_from_event_files`` does the same for the JSONL event files the site configuration names
(``store.event_files``): each is rewritten atomically without the lines naming the person.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from shared.errors import GalleryError
from shared.files import atomic_write
from identity.corrections import track_source
from store.base import Store
from store.types import EventQuery, is_visitor_name

PAGE = 10_000  # events read at a time (the most one query returns)


class NothingToForget(GalleryError):
    """The store holds nothing of the name (nothing changed)."""


@dataclass(frozen=True)
class ForgetReport:
    """What one forget removed, per kind; ``left``: what the backend could not erase, in words."""

    name: str
    faces: int
    visitor_faces: int
    rejections: int
    merges: int
    events: int
    crops: int
    live_tracks: int
    left: tuple[str, ...]
    previews: int = 0  # every camera's preview is deleted: any may show the person (they come back within 1 s)
    negatives: int = 0  # negative faces kept as evidence that a face is NOT the person

    def to_json(self) -> dict:
        data = asdict(self)
        data["left"] = list(self.left)
        return data


def _holds(store: Store, name: str) -> bool:
    """Whether the store keeps anything of ``name``: faces, negative evidence, a visitor, events, a live track, a
    rejection or a merge."""
    if any(p.name == name for p in store.persons.persons()) or name in store.negatives.counts():
        return True
    if any(v.visitor == name for v in store.visitors.list()):
        return True
    if store.events.query(EventQuery(identity=name, limit=1)):
        return True
    if any(t.name == name for t in store.live.alive(now=float("-inf"))):
        return True
    if any(name in names for names in store.visitors.rejections().values()):
        return True
    return is_visitor_name(name) and store.visitors.merged_into(name) is not None


def _track_sources(store: Store, name: str) -> set[str]:
    """The tracks ``name``'s events belong to, as negative faces name where they came from."""
    sources: set[str] = set()
    after = None
    while True:
        page = store.events.query(EventQuery(identity=name, after_id=after, oldest_first=True, limit=PAGE))
        sources |= {track_source(e.event.camera, e.event.track) for e in page}
        if len(page) < PAGE:
            return sources
        after = page[-1].id


def _erase_as_negative(store: Store, sources: set[str]) -> int:
    """Negative faces kept under someone else's name that were taken from ``sources`` (the forgotten person's own
    tracks, rejected as somebody they are not): they are the forgotten person's faces."""
    removed = 0
    for person in sorted(store.negatives.counts()) if sources else ():
        for face in store.negatives.faces_of(person):
            if face.source in sources:
                removed += store.negatives.remove_face(person, face.face_id)
    return removed


def forget(store: Store, name: str, actor: str | None = None) -> ForgetReport:
    """Erase ``name`` from every part of ``store`` (GalleryError, nothing changed, when it holds nothing of it),
    then record the forget in the audit log, whose mapping lets go of the name (``actor``: who asked; default the
    CLI user)."""
    if not name.strip():
        raise GalleryError("the name to forget must not be empty")
    if not _holds(store, name):
        raise NothingToForget(f"the store {store.describe()} holds nothing of {name!r}: no faces, negative evidence, "
                           "visitor, events, live tracks, rejections or merges")
    store.record_erasure(name)  # first: a worker's buffered writes naming them are dropped from now on
    sources = _track_sources(store, name)
    live, live_crops = store.live.remove_identity(name)
    previews = store.live.clear_previews()
    events, event_crops = store.events.delete_identity(name)
    crops = sum(store.media.remove(key) for key in sorted(set(live_crops) | set(event_crops)))
    own_rejections = len(store.visitors.rejections().get(name, ())) if is_visitor_name(name) else 0
    refs = store.visitors.erase_references(name)
    visitor_faces = (store.visitors.remove(name) if is_visitor_name(name) else 0) + refs.merged_faces
    negatives = (store.negatives.erase(name) if not is_visitor_name(name) else 0) + _erase_as_negative(store, sources)
    faces = store.persons.remove_person(name, missing_ok=True)  # also a person called visitor-N before the name rule
    store.audit.forget_subject(name, actor)  # before finish_erasure: its mapping's change is rewritten away too
    left = refs.left + store.finish_erasure(name)
    return ForgetReport(name, faces, visitor_faces, refs.rejections + own_rejections, refs.merges, events, crops,
                        live, left, previews, negatives)


@dataclass(frozen=True)
class EventFileReport:
    """One JSONL event file after a forget: lines ``removed`` and ``kept``; ``missing`` when it does not exist;
    ``error``: why it could not be rewritten (the person's lines are still in it)."""

    path: str
    removed: int = 0
    kept: int = 0
    missing: bool = False
    error: str | None = None

    def describe(self) -> str:
        if self.missing:
            return f"events file {self.path}: not there (nothing to erase)"
        if self.error is not None:
            return f"events file {self.path}: NOT rewritten ({self.error}); it still holds the person's lines"
        return f"events file {self.path}: {self.removed} line(s) removed, {self.kept} kept"


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def names_person(line: bytes, name: str) -> bool:
    """Whether a JSONL line is the person's: a JSON value in it is ``name`` (a line that is not JSON: it holds the
    name's bytes)."""
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return name.encode("utf-8") in line
    return any(value == name for value in _strings(obj))


def _without(data: bytes, name: str) -> tuple[bytes, int, int]:
    lines = data.splitlines(keepends=True)
    kept = [line for line in lines if not names_person(line, name)]
    return b"".join(kept), len(lines) - len(kept), len(kept)


def _rewrite_event_file(path: Path, name: str) -> EventFileReport:
    """Rewrite ``path`` without ``name``'s lines (atomically, mode kept). A writer appending meanwhile (`argusnet
    events --jsonl` opens the file for each line) appends to the old file until the rename: what it appended after
    the read is filtered and appended to the new one."""
    with open(path, "rb") as old:
        mode = os.fstat(old.fileno()).st_mode & 0o7777
        data, removed, kept = _without(old.read(), name)
        if removed == 0:
            return EventFileReport(str(path), 0, kept)
        atomic_write(path, data, durable=True)
        os.chmod(path, mode)
        late, late_removed, late_kept = _without(old.read(), name)
    if late:
        with open(path, "ab") as new:
            new.write(late)
    return EventFileReport(str(path), removed + late_removed, kept + late_kept)


def erase_from_event_files(paths: Sequence[Path], name: str) -> tuple[EventFileReport, ...]:
    """Every configured JSONL event file rewritten without ``name``'s lines, one report each (a file that cannot
    be read or written is reported with its error, never raised: the other files are still rewritten)."""
    reports = []
    for path in paths:
        try:
            reports.append(_rewrite_event_file(Path(path), name))
        except FileNotFoundError:
            reports.append(EventFileReport(str(path), missing=True))
        except OSError as exc:
            reports.append(EventFileReport(str(path), error=exc.strerror or str(exc)))
    return tuple(reports)
