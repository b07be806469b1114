"""Copy one store into another (local <-> Redis, local -> local, Redis -> Redis) through the public interface only
(`store.base`), then verify the copy.

What is copied: every enrolled person with their faces (embedding, crop, landmarks, source, in face order), the
negative evidence of every person (the same, `store.negatives`), every visitor with its faces and rejections, the
merges of visitors into persons that can be found, the crops the event log refers to, and the event log itself
(oldest first, so the destination's ids increase in the same order).

The interface has no way to create a visitor under a given name (`VisitorStore` only mints ``visitor-N`` through
``match_or_create``) and no way to list merges. So, with what the interface allows:

- Visitors are re-minted in the order of their numbers by ``match_or_create`` at a threshold no face reaches; a
  number the source no longer holds (an expired visitor the events still name, a merged visitor) is minted as a
  placeholder and then removed again (a merged one by ``remove`` and then ``merge``, which records the merge and
  keeps nothing to undo it with: merged-away faces are not copied, so a copied merge cannot be undone; an expired
  one by ``expire`` after every real visitor was marked seen), so a fresh destination hands out the same names. Where
  names still differ (a destination whose counter had moved), every reference (events, rejections, merges) is
  renamed consistently and the report lists the renames.
- Merges are found by asking ``merged_into`` for every visitor number up to the highest one the source mentions
  (visitors, event names, ``merged_visitor`` fields).
- The event log is read oldest first, paged by id (``EventQuery(after_id=..., oldest_first=True)``).

Timestamps that the interface sets itself (person created / last seen, face added, negative face added, visitor
first / last seen, crop time) become the time of the migration (crops: the capture time of their event); crops are
re-encoded by ``put_crop``. Live tracks are not copied (they expire within seconds anyway). Stop the workers first:
a store written during the copy fails the verification.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np
import simplejpeg

from shared.errors import InputError, StoreError
from store.base import EventLog, Store
from store.types import VISITOR_PREFIX, EventQuery, EventRecord, FaceSample, LoggedEvent, StoredFace, is_visitor_name

EVENT_PAGE = 10_000  # the most both backends return from one query
APPEND_BATCH = 500
NEVER = math.inf  # a match_or_create threshold no similarity reaches: always mints

GAPS = (
    "VisitorStore has no import_visitor(name, faces, first_seen, last_seen): visitors are re-minted by "
    "match_or_create (placeholders keep the numbers), so their first/last seen become the migration time",
    "VisitorStore has no merges() listing: merges are found by probing merged_into for visitor-1..N, N the highest "
    "visitor number the source still mentions",
    "PersonGallery.add_person and NegativeStore.add take no timestamps: person created/last_seen and face created "
    "become the migration time",
    "MediaStore has no put of raw JPEG bytes, no listing and no crop time: crops referenced by events are decoded "
    "and re-encoded (not byte-equal), timed by their event's capture time; crops no event names are not copied",
    "LiveTracks are not copied (they expire within retention.live_ttl_s)",
    "VisitorStore has no way to read or write what a merge kept for an unmerge (the merged-away faces): merges are "
    "copied without it, so a copied merge cannot be undone (`argusnet visitors unmerge` says so)",
    "The audit log is not copied: its records are hash-chained in the source store, which keeps them (save them "
    "with `argusnet audit list --json` before retiring it); the destination starts a chain of its own",
)


@dataclass(frozen=True)
class Check:
    """One verification: what was compared, the source's and the destination's value, whether they agree."""

    name: str
    source: int
    destination: int
    ok: bool


@dataclass(frozen=True)
class MigrationReport:
    source: str
    destination: str
    persons: int
    person_faces: int
    negatives: int  # persons with negative evidence
    negative_faces: int
    visitors: int
    visitor_faces: int
    rejections: int
    merges: int
    events: int
    crops: int
    crops_missing: int
    renamed: dict[str, str]
    seconds: float
    checks: tuple[Check, ...]
    gaps: tuple[str, ...] = GAPS

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict:
        return {"source": self.source, "destination": self.destination, "ok": self.ok,
                "copied": {"persons": self.persons, "person_faces": self.person_faces, "negatives": self.negatives,
                           "negative_faces": self.negative_faces, "visitors": self.visitors,
                           "visitor_faces": self.visitor_faces, "rejections": self.rejections,
                           "merges": self.merges, "events": self.events, "crops": self.crops,
                           "crops_missing_in_source": self.crops_missing},
                "renamed_visitors": self.renamed, "seconds": round(self.seconds, 3),
                "checks": [{"name": c.name, "source": c.source, "destination": c.destination, "ok": c.ok}
                           for c in self.checks],
                "not_copied": list(self.gaps)}


@dataclass(frozen=True)
class VisitorPlan:
    """The source's visitors: live ones with their faces, merges (visitor -> person), their rejections and the
    highest visitor number the source mentions (every number up to it is minted in the destination)."""

    live: dict[str, list[StoredFace]]
    merges: dict[str, str]
    rejections: dict[str, frozenset[str]]
    highest: int


@dataclass(frozen=True)
class CopiedVisitors:
    renamed: dict[str, str] = field(default_factory=dict)
    faces: int = 0


# ----- reading -----------------------------------------------------------------------------------------------
def read_events(log: EventLog, page: int = EVENT_PAGE) -> list[LoggedEvent]:
    """Every event, oldest (lowest id) first, paged by id as a consumer reads on from its cursor."""
    events: list[LoggedEvent] = []
    cursor = None
    while True:
        batch = log.query(EventQuery(after_id=cursor, limit=page, oldest_first=True))
        events += batch
        if len(batch) < page:
            return events
        cursor = batch[-1].id


def _visitor_number(name: str | None) -> int | None:
    return int(name.partition("-")[2]) if name is not None and is_visitor_name(name) else None


def plan_visitors(src: Store, events: Iterable[LoggedEvent]) -> VisitorPlan:
    live = {v.visitor: src.visitors.faces_of(v.visitor) for v in src.visitors.list() if v.faces > 0}
    rejections = src.visitors.rejections()
    mentioned = set(live) | set(rejections)
    for e in events:
        mentioned.update(n for n in (e.event.name, e.event.merged_visitor) if n is not None)
    highest = max((n for n in map(_visitor_number, mentioned) if n is not None), default=0)
    merges = {}
    for number in range(1, highest + 1):
        name = f"{VISITOR_PREFIX}-{number}"
        into = None if name in live else src.visitors.merged_into(name)
        if into is not None:
            merges[name] = into
    return VisitorPlan(live, merges, rejections, highest)


# ----- writing -----------------------------------------------------------------------------------------------
def samples(faces: Iterable[StoredFace]) -> list[FaceSample]:
    return [FaceSample(f.embedding, f.crop, f.landmarks, f.source) for f in faces]


def _placeholder(dim: int) -> FaceSample:
    embedding = np.zeros(dim, np.float32)
    embedding[0] = 1.0
    return FaceSample(embedding, np.zeros((8, 8, 3), np.uint8), np.zeros((5, 2), np.float32), "migration")


def check_empty(dst: Store) -> None:
    """A destination holding anything is refused: a copy into it could not be verified, and merging two stores'
    visitor numbers and event ids is not what a migration does."""
    persons, visitors = len(dst.persons.persons()), len(dst.visitors.list())
    negatives = sum(dst.negatives.counts().values())
    events = len(dst.events.query(EventQuery(limit=1)))
    if persons or visitors or negatives or events:
        raise InputError(f"the destination {dst.describe()} is not empty ({persons} person(s), {negatives} negative "
                         f"face(s), {visitors} visitor(s), {'some' if events else 'no'} events): migrate into an "
                         "empty store (a new directory, database or store.prefix)")


def copy_persons(src: Store, dst: Store) -> int:
    faces = 0
    for person in src.persons.persons():
        stored = src.persons.faces_of(person.name)
        dst.persons.add_person(person.name, samples(stored))
        faces += len(stored)
    return faces


def copy_negatives(src: Store, dst: Store) -> int:
    """Every person's negative evidence, in face order; how many faces."""
    faces = 0
    for person in sorted(src.negatives.counts()):
        stored = src.negatives.faces_of(person)
        dst.negatives.add(person, samples(stored))
        faces += len(stored)
    return faces


def _mint(dst: Store, faces: list[FaceSample]) -> str:
    return dst.visitors.match_or_create(faces, NEVER, max_faces=len(faces)).visitor


def copy_visitors(plan: VisitorPlan, dst: Store) -> CopiedVisitors:
    """Mint visitor-1..N in order (real visitors with their faces, placeholders for the others), merge the
    placeholders of merged visitors, expire the other placeholders, copy rejections."""
    placeholder = [_placeholder(dst.persons.dim)]
    renamed: dict[str, str] = {}
    expired: list[str] = []
    faces = 0
    for number in range(1, plan.highest + 1):
        name = f"{VISITOR_PREFIX}-{number}"
        stored = plan.live.get(name)
        new = _mint(dst, samples(stored) if stored else placeholder)
        if new != name:
            renamed[name] = new
        if stored:
            faces += len(stored)
        elif name in plan.merges:
            dst.visitors.remove(new)  # the placeholder goes first: the merge keeps nothing an unmerge could restore
            dst.visitors.merge(new, plan.merges[name])
        else:
            expired.append(new)
    if expired:
        _drop_placeholders(dst, [renamed.get(n, n) for n in plan.live], set(expired))
    for visitor, names in plan.rejections.items():
        for not_name in sorted(names):
            dst.visitors.reject(renamed.get(visitor, visitor), not_name)
    return CopiedVisitors(renamed, faces)


def _drop_placeholders(dst: Store, real: list[str], placeholders: set[str]) -> None:
    """Every real visitor is marked seen just after now, then everything not seen since now goes: the
    placeholders, which were all minted before."""
    mark = time.time()
    for visitor in real:
        dst.visitors.seen(visitor, [], max_faces=1, when=mark + 1e-3)
    gone = set(dst.visitors.expire(mark + 5e-4))
    if gone != placeholders:
        raise StoreError(f"removing the placeholder visitors removed {sorted(gone)}, expected {sorted(placeholders)}")


def _renamed(event: LoggedEvent, renamed: dict[str, str]) -> EventRecord:
    e = event.event
    name = renamed.get(e.name, e.name) if e.name is not None else None
    merged = renamed.get(e.merged_visitor, e.merged_visitor) if e.merged_visitor is not None else None
    if name != e.name or merged != e.merged_visitor:
        e = replace(e, name=name, merged_visitor=merged)
    return EventRecord(e, event.crop, event.worker)


def copy_crops(src: Store, dst: Store, events: list[LoggedEvent]) -> tuple[int, int]:
    """The crops the events name, once each (timed by their event's capture time); (copied, missing)."""
    copied, missing, done = 0, 0, set()
    for e in events:
        if e.crop is None or e.crop in done:
            continue
        done.add(e.crop)
        try:
            data = src.media.get_crop(e.crop)
        except KeyError:  # retention removed the crop, the event is still there: the copy says the same
            missing += 1
            continue
        camera, _, track = e.crop.partition("/")
        key = dst.media.put_crop(camera, int(track), simplejpeg.decode_jpeg(data, colorspace="RGB"),
                                 when=e.event.capture_ts)
        if key != e.crop:
            raise StoreError(f"crop {e.crop!r} was stored as {key!r} in the destination")
        copied += 1
    return copied, missing


def copy_events(dst: Store, events: list[LoggedEvent], renamed: dict[str, str]) -> int:
    for start in range(0, len(events), APPEND_BATCH):
        dst.events.append([_renamed(e, renamed) for e in events[start:start + APPEND_BATCH]])
    return len(events)


# ----- verifying ---------------------------------------------------------------------------------------------
def _faces_digest(faces: list[StoredFace]) -> list[tuple[bytes, bytes, str]]:
    return [(np.asarray(f.embedding, np.float32).tobytes(), np.asarray(f.landmarks, np.float32).tobytes(), f.source)
            for f in faces]


def _gallery_checks(label: str, src_faces: dict[str, list[StoredFace]],
                    dst_faces: dict[str, list[StoredFace]]) -> list[Check]:
    """Same names, same face count per name, byte-equal float32 embeddings (and landmarks, sources) in order."""
    same_names = set(src_faces) == set(dst_faces)
    counts = sum(len(src_faces[n]) == len(dst_faces.get(n, ())) for n in src_faces)
    equal = sum(a == b for n in src_faces for a, b in zip(_faces_digest(src_faces[n]),
                                                          _faces_digest(dst_faces.get(n, []))))
    total = sum(map(len, src_faces.values()))
    return [Check(f"{label}", len(src_faces), len(dst_faces), same_names),
            Check(f"{label}: faces", total, sum(map(len, dst_faces.values())),
                  counts == len(src_faces) and same_names),
            Check(f"{label}: byte-equal embeddings", total, equal, equal == total)]


def _by_person(faces: list[StoredFace], renamed: dict[str, str] | None = None) -> dict[str, list[StoredFace]]:
    out: dict[str, list[StoredFace]] = {}
    for f in sorted(faces, key=lambda f: f.face_id):
        out.setdefault(f.person if renamed is None else renamed.get(f.person, f.person), []).append(f)
    return out


def _event_key(event: LoggedEvent) -> tuple:
    return (event.event, event.crop, event.worker)


def verify(src: Store, dst: Store, plan: VisitorPlan, src_events: list[LoggedEvent],
           renamed: dict[str, str]) -> tuple[Check, ...]:
    checks = _gallery_checks("persons", _by_person(src.persons.all_faces()), _by_person(dst.persons.all_faces()))
    checks += _gallery_checks("negatives", _by_person(src.negatives.all_faces()),
                              _by_person(dst.negatives.all_faces()))
    checks += _gallery_checks("visitors", _by_person([f for fs in plan.live.values() for f in fs], renamed),
                              _by_person(dst.visitors.all_faces()))
    want_rej = {renamed.get(k, k): v for k, v in plan.rejections.items()}
    got_rej = dst.visitors.rejections()
    checks.append(Check("visitor rejections", sum(map(len, want_rej.values())), sum(map(len, got_rej.values())),
                        want_rej == got_rej))
    merged = sum(dst.visitors.merged_into(renamed.get(v, v)) == p for v, p in plan.merges.items())
    checks.append(Check("merges", len(plan.merges), merged, merged == len(plan.merges)))
    want = [_event_key(LoggedEvent(0, r.event, r.crop, r.worker)) for r in (_renamed(e, renamed) for e in src_events)]
    got = [_event_key(e) for e in read_events(dst.events)]
    checks.append(Check("events (in order, field by field)", len(want), len(got), want == got))
    return tuple(checks)


def migrate(src: Store, dst: Store, progress: Callable[[str], None] = lambda _: None) -> MigrationReport:
    """Copy ``src`` into the empty ``dst`` and verify it (StoreError / InputError on failure to copy; a copy
    that does not verify is a report whose ``ok`` is False)."""
    t0 = time.perf_counter()
    check_empty(dst)
    events = read_events(src.events)
    plan = plan_visitors(src, events)
    progress(f"source: {len(src.persons.persons())} person(s), {len(plan.live)} visitor(s), {len(events)} event(s)")
    person_faces = copy_persons(src, dst)
    negative_faces = copy_negatives(src, dst)
    progress(f"copied {person_faces} person face(s), {negative_faces} negative face(s)")
    visitors = copy_visitors(plan, dst)
    crops, missing = copy_crops(src, dst, events)
    copied_events = copy_events(dst, events, visitors.renamed)
    progress(f"copied {visitors.faces} visitor face(s), {crops} crop(s), {copied_events} event(s); verifying")
    checks = verify(src, dst, plan, events, visitors.renamed)
    return MigrationReport(src.describe(), dst.describe(), len(src.persons.persons()), person_faces,
                           len(src.negatives.counts()), negative_faces, len(plan.live), visitors.faces,
                           sum(map(len, plan.rejections.values())), len(plan.merges), copied_events, crops, missing,
                           visitors.renamed, time.perf_counter() - t0, checks)
