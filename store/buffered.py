"""A worker's store: any backend (`store.base.Store`) wrapped so that an unavailable store server does not stop
recognition, and every store operation is timed and counted.

- Search is the in-process replica (FAISS), so recognising goes on while the server is down; ``sync()`` then fails
  (StoreUnavailableError, which the tracked processor counts and goes on from) and the replica lag grows.
- Writes the worker makes (visitors ``seen`` and ``merge``; events appended and renamed; live tracks put, removed
  and renamed; crops) go straight to the store while nothing waits before them. When one fails with `StoreError`
  it waits in a buffer, and every later write waits behind it, in the order made. A flush is attempted before each
  write and from the worker's idle housekeeping (``flush()``); it writes the waiting writes oldest first
  (consecutive event appends as one append) and stops at the first that fails again. Each kind (events,
  live_tracks, crops, visitors) is bounded (``worker.store_buffer``, `store.config.StoreBufferConfig`): beyond
  it the oldest write of that kind is dropped, logged and counted in ``argusnet_store_dropped_total{kind}``,
  never silently; so are the writes still waiting when the worker stops, and a write that failed
  ``MAX_WRITE_FAILURES`` times with a StoreError that is not unavailability (it is not going to succeed).
- A buffered write returns what the caller can know without the store: ``events.append`` the empty list (ids are
  handed out when the events are written), ``put_crop`` the crop's key (``camera/track``, known in advance),
  renames and merges 0. A live track written late gets what was left of its TTL (nothing, when it ran out: the
  entry would have expired by then anyway); ``seen`` and crops keep the time they were made.
- ``visitors.match_or_create`` is not buffered: only the store can answer it atomically (a visitor id must be the
  same on every worker, so none is minted locally). While the store is unavailable it raises
  StoreUnavailableError; the track stays without a visitor and asks again at its next embedding.
- A passing failure of the store's disk or database (a full disk, a read-only file system, an I/O error, a
  database locked too long: `store.faults`) is a StoreFaultError, a kind of StoreUnavailableError, and is handled
  the same way: writes wait (a full disk never drops a write while its kind's buffer has room), and no raw OSError
  or sqlite3 error leaves this store.
- After a StoreUnavailableError no call reaches the store (each fails at once) until a retry is due; the delay
  between retries doubles from ``FIRST_RETRY_S`` to ``MAX_RETRY_S``. A server that is gone costs one failed call
  per retry (``store.socket_timeout_s`` for a silent one), not one per operation. An outage in which a write failed
  ends only when a write succeeds (READ_OPERATIONS): reads go on working on a full disk, and are no sign that the
  waiting writes can be made.

The local backend behaves as before while it works (everything is written at once); a failing local write is
buffered and retried in the same way.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared import metrics as m
from shared.errors import StoreError, StoreUnavailableError
from shared.logs import RateLimitedLog
from shared.names import name_problem
from store.audit import AuditRecord, AuditReport, AuditTrail
from store.base import EventLog, LiveTracks, MediaStore, NegativeStore, PersonGallery, Store, VisitorStore
from store.config import StoreBufferConfig
from store.faults import as_fault
from store.local.media import crop_key
from store.types import (
    CameraStatus,
    ErasedReferences,
    EventQuery,
    EventRecord,
    FaceSample,
    LiveTrack,
    LoggedEvent,
    MergeUndo,
    PersonHit,
    PersonInfo,
    StoredFace,
    TrackRef,
    VisitorInfo,
    VisitorMatch,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
FLUSH_BUDGET_S = 0.25  # one flush writes for at most this long (the rest goes at the next one)
EVENTS_PER_APPEND = 500  # buffered events written in one append
MAX_WRITE_FAILURES = 5  # a buffered write failing this often with a StoreError other than unavailability is dropped
# The operations that only read. Reads go on working on a full disk or a read-only file system, so a read that
# succeeds does not end an outage that a failed write began (only a write that succeeds does): else the store
# would be "available again" at every read and "unavailable" at the next write, logging both twice a second and
# retrying the writes at the first delay for as long as the disk stays full.
READ_OPERATIONS = frozenset({"search", "sync_persons", "sync_visitors", "sync_negatives", "read_persons",
                             "rejections", "search_negatives", "read_negatives", "search_visitors", "read_visitors",
                             "query_events", "read_live", "read_crop", "audit_read", "read_erasures"})


@dataclass(frozen=True)
class Write:
    """One waiting write: ``apply(age_s)`` makes it (``age_s``: how long it waited). An event append carries its
    ``record``, so that consecutive ones are written in one append."""

    seq: int
    kind: str
    operation: str
    queued_at: float
    apply: Callable[[float], object]
    record: EventRecord | None = None
    names: tuple[str, ...] = ()  # the identities the write names (checked against erasure tombstones)
    made_at: float = 0.0  # unix s: a tombstone from after it erases it
    crop: str | None = None  # a crop write's key (dropped with the erased event that names it)


class StoreMetrics:
    """The worker's store metrics, every label value exported from the start."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.latency = Histogram(m.STORE_LATENCY, "Store operation latency (search: the in-process replica)",
                                 ["operation"], buckets=m.STORE_LATENCY_BUCKETS, registry=registry)
        self.errors = Counter(m.STORE_ERRORS, "Store operations that failed (or were refused while the store is "
                              "unavailable)", ["operation"], registry=registry)
        self.depth = Gauge(m.STORE_BUFFER_DEPTH, "Writes waiting for the store", ["kind"], registry=registry)
        self.dropped = Counter(m.STORE_DROPPED, "Buffered writes given up (never written)", ["kind"],
                               registry=registry)
        self.erased = Counter(m.STORE_ERASED_WRITES, "Buffered writes not made: they name a person forgotten "
                              "after they were made (store.erasures)", ["kind"], registry=registry)
        self.names_refused = Counter(m.STORE_NAMES_REFUSED, "Enrolled persons whose names break the person-name rule "
                                     "(stored before it): never named by this worker", registry=registry)
        self.replica_lag = Gauge(m.STORE_REPLICA_LAG, "Seconds since the gallery replicas last synced with the "
                                 "store", registry=registry)
        for operation in m.STORE_OPERATIONS:
            self.latency.labels(operation=operation)
            self.errors.labels(operation=operation)
        for kind in m.STORE_BUFFER_KINDS:
            self.depth.labels(kind=kind).set(0)
            self.dropped.labels(kind=kind)
            self.erased.labels(kind=kind)


class WriteBuffer:
    """Waiting writes per kind, each kind bounded; ``seq`` keeps the order they were made in across kinds. Not
    thread-safe: the owner holds its lock."""

    def __init__(self, limits: StoreBufferConfig, metrics: StoreMetrics) -> None:
        self.limits = limits
        self._metrics = metrics
        self._queues: dict[str, deque[Write]] = {kind: deque() for kind in m.STORE_BUFFER_KINDS}
        self._seq = 0
        self._rate_log = RateLimitedLog(log)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def depths(self) -> dict[str, int]:
        return {kind: len(q) for kind, q in self._queues.items()}

    def push(self, kind: str, operation: str, apply: Callable[[float], object],
             record: EventRecord | None = None, names: Sequence[str | None] = (), crop: str | None = None) -> None:
        self._seq += 1
        queue = self._queues[kind]
        queue.append(Write(self._seq, kind, operation, time.monotonic(), apply, record,
                           tuple(n for n in names if n), time.time(), crop))
        if len(queue) > self.limits.of(kind):
            self.give_up([queue[0]], f"more than {self.limits.of(kind)} {kind} writes are waiting")
        self._metrics.depth.labels(kind=kind).set(len(queue))

    def next_batch(self) -> list[Write]:
        """The oldest waiting write; with the event appends right after it when it is one (at most
        EVENTS_PER_APPEND, none made after a waiting write of another kind)."""
        heads = [q[0] for q in self._queues.values() if q]
        if not heads:
            return []
        first = min(heads, key=lambda w: w.seq)
        if first.record is None:
            return [first]
        before = min((w.seq for w in heads if w.kind != first.kind), default=self._seq + 1)
        batch: list[Write] = []
        for write in self._queues[first.kind]:
            if write.record is None or write.seq > before or len(batch) == EVENTS_PER_APPEND:
                break
            batch.append(write)
        return batch

    def remove(self, writes: Sequence[Write]) -> None:
        """Take writes that were made (or given up) off the front of their queues."""
        for write in writes:
            queue = self._queues[write.kind]
            if queue and queue[0] is write:
                queue.popleft()
            self._metrics.depth.labels(kind=write.kind).set(len(queue))

    def give_up(self, writes: Sequence[Write], why: str) -> None:
        for write in writes:
            self._metrics.dropped.labels(kind=write.kind).inc()
        self.remove(writes)
        if writes:
            self._rate_log.warning(f"drop:{writes[0].kind}", "store: %d waiting %s write(s) dropped (%s): they "
                                   "are lost", len(writes), writes[0].kind, why)

    def names(self) -> set[str]:
        """Every identity a waiting write names."""
        return {name for queue in self._queues.values() for write in queue for name in write.names}

    def take_erased(self, erased: Mapping[str, float]) -> tuple[list[Write], set[str]]:
        """Take off every waiting write made before a tombstone of a name it carries (``erased``: name -> when it
        was forgotten), and the crop writes of the events taken; those writes and the crop keys those events name."""
        def hit(write: Write) -> bool:
            return any(write.made_at <= erased.get(name, float("-inf")) for name in write.names)

        taken = [w for queue in self._queues.values() for w in queue if hit(w)]
        crops = {w.record.crop for w in taken if w.record is not None and w.record.crop}
        taken += [w for w in self._queues["crops"] if w.crop in crops and not hit(w)]
        gone = {id(w) for w in taken}
        for kind, queue in self._queues.items():
            self._queues[kind] = deque(w for w in queue if id(w) not in gone)
            self._metrics.depth.labels(kind=kind).set(len(self._queues[kind]))
        return taken, crops

    def give_up_all(self, why: str) -> int:
        dropped = 0
        for queue in self._queues.values():
            writes = list(queue)
            self.give_up(writes, why)
            dropped += len(writes)
        return dropped


class Availability:
    """Whether calls may reach the store: after a StoreUnavailableError none does (each fails at once) until a
    retry is due (see the module docstring); an outage ends with a call that succeeds, a write when a write failed
    in it (READ_OPERATIONS). Thread-safe."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._delay = FIRST_RETRY_S
        self._write_failed = False  # in this outage: then only a write that succeeds ends it

    def allows(self) -> bool:
        with self._lock:
            return self.down_since is None or time.monotonic() >= self._retry_at

    def failed(self, exc: StoreUnavailableError, write: bool) -> None:
        """A call failed: ``write``, one that writes."""
        with self._lock:
            now = time.monotonic()
            self._write_failed = write or (self._write_failed and self.down_since is not None)
            if self.down_since is None:
                self.down_since, self._delay = now, FIRST_RETRY_S
                log.warning("store %s is unavailable: writes wait in a buffer, recognition goes on from the "
                            "replica (%s)", self.where, exc)
            else:
                self._delay = min(self._delay * 2.0, MAX_RETRY_S)
            self._retry_at = now + self._delay

    def recovered(self, write: bool) -> None:
        """A call succeeded: ``write``, one that writes."""
        with self._lock:
            if self.down_since is None or (self._write_failed and not write):
                return
            log.warning("store %s is available again after %.1f s", self.where, time.monotonic() - self.down_since)
            self.down_since, self._delay = None, FIRST_RETRY_S

    def refusal(self) -> StoreUnavailableError:
        with self._lock:
            now = time.monotonic()
            down = 0.0 if self.down_since is None else now - self.down_since
            wait = max(0.0, self._retry_at - now)
        return StoreUnavailableError(f"store {self.where} is unavailable (for {down:.1f} s; next try in "
                                     f"{wait:.1f} s)")


class BufferedStore:
    """A `Store` over another one (see the module docstring). Use as a context manager, or ``close()``."""

    def __init__(self, store: Store, registry: CollectorRegistry | None = None,
                 limits: StoreBufferConfig | None = None) -> None:
        self.inner = store
        self.metrics = StoreMetrics(registry)
        self.availability = Availability(store.describe())
        self._buffer = WriteBuffer(limits or StoreBufferConfig(), self.metrics)
        self._lock = threading.RLock()  # writes and flushes, one at a time, in order
        self._failures = 0  # of the oldest waiting write, with StoreErrors other than unavailability
        # negatives join once synced: a worker that does not use them yet must not show a growing lag
        self._synced_at = {"persons": time.monotonic(), "visitors": time.monotonic()}
        self._rate_log = RateLimitedLog(log)
        self.metrics.replica_lag.set_function(self.replica_lag)
        self.persons = BufferedPersons(self, store.persons)
        self.visitors = BufferedVisitors(self, store.visitors)
        self.negatives = BufferedNegatives(self, store.negatives)
        self.media = BufferedMedia(self, store.media)
        self.events = BufferedEvents(self, store.events)
        self.live = BufferedLive(self, store.live)
        self.audit = BufferedAudit(self, store.audit)

    # ----- calls -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        """Time one operation; count it when it fails. Every failure of the store's disk or database leaves as
        StoreError, never as a raw OSError or sqlite3 error; a passing one (a full disk, a read-only file system, an
        I/O error: `store.faults`) as StoreFaultError, handled as an unavailable store (further calls stop until a
        retry is due)."""
        start = time.perf_counter()
        try:
            yield
        except StoreUnavailableError as exc:
            self.metrics.errors.labels(operation=operation).inc()
            self.availability.failed(exc, operation not in READ_OPERATIONS)
            raise
        except (StoreError, OSError, sqlite3.Error) as exc:
            self.metrics.errors.labels(operation=operation).inc()
            fault = as_fault(self.describe(), operation, exc)
            if fault is not None:
                self.availability.failed(fault, operation not in READ_OPERATIONS)
                raise fault from exc
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store {self.describe()}: {operation} failed ({type(exc).__name__}: {exc})") from exc
        finally:
            self.metrics.latency.labels(operation=operation).observe(time.perf_counter() - start)

    def call(self, operation: str, fn: Callable[..., T], *args: object) -> T:
        """One call to the store; while it is unavailable and no retry is due, StoreUnavailableError at once."""
        if not self.availability.allows():
            self.metrics.errors.labels(operation=operation).inc()
            raise self.availability.refusal()
        with self.timed(operation):
            result = fn(*args)
        self.availability.recovered(operation not in READ_OPERATIONS)
        return result

    def sync(self, part: str, fn: Callable[[], bool]) -> bool:
        changed = self.call(f"sync_{part}", fn)
        self._synced_at[part] = time.monotonic()
        return changed

    def replica_lag(self) -> float:
        """Seconds since every gallery replica last synced successfully (opening the store counts; the negatives
        count from their first sync)."""
        return max(0.0, time.monotonic() - min(self._synced_at.values()))

    # ----- writes ------------------------------------------------------------------------------------------
    def write(self, kind: str, operation: str, apply: Callable[[float], T], queued: T,
              names: Sequence[str | None] = (), crop: str | None = None) -> T:
        """Make a write now when nothing waits before it, else (or when it fails) queue it and return ``queued``;
        ``names``: the identities it names, ``crop``: a crop write's key (see `_drop_erased`)."""
        with self._lock:
            self.flush()
            if not len(self._buffer):
                try:
                    return self.call(operation, apply, 0.0)
                except StoreError as exc:
                    self._rate_log.warning(kind, "store %s failed: it waits to be retried (%s)", operation, exc)
            self._buffer.push(kind, operation, apply, names=names, crop=crop)
            return queued

    def write_events(self, records: list[EventRecord], append: Callable[[list[EventRecord]], list[int]]) -> list[int]:
        """``write`` for an event append: one record per waiting write, so that the bound counts events."""
        with self._lock:
            self.flush()
            if not len(self._buffer):
                try:
                    return self.call("append_events", append, records)
                except StoreError as exc:
                    self._rate_log.warning("events", "store append_events failed: %d event(s) wait to be retried "
                                           "(%s)", len(records), exc)
            for record in records:
                self._buffer.push("events", "append_events", lambda _age, r=record: append([r]), record,
                                  names=(record.event.name,))
            return []

    def flush(self) -> int:
        """Write what waits, oldest first, until it is all written, one fails, or FLUSH_BUDGET_S is spent; how many
        writes were made."""
        with self._lock:
            made = 0
            deadline = time.monotonic() + FLUSH_BUDGET_S
            if len(self._buffer) and self.availability.allows() and not self._drop_erased():
                return made
            while len(self._buffer) and time.monotonic() < deadline and self.availability.allows():
                batch = self._buffer.next_batch()
                if not self._flush_batch(batch):
                    break
                made += len(batch)
            return made

    def _drop_erased(self) -> bool:
        """Before waiting writes are made: those naming someone forgotten since they were made (`store.erasures`)
        are dropped, with the crops of the events dropped (also from the store: one may have been written before
        the forget), and counted in argusnet_store_erased_writes_total{kind}. False when the store could not say
        (nothing is written then: a forgotten name is never written back)."""
        names = self._buffer.names()
        if not names:
            return True
        try:
            erased = self.call("read_erasures", self.inner.erased, names)
            if not erased:
                return True
            taken, crops = self._buffer.take_erased(erased)
            for key in sorted(crops):
                self.call("remove_crop", self.inner.media.remove, key)
        except StoreError as exc:
            self._rate_log.warning("erasures", "store: cannot check the waiting writes against forgotten names, "
                                   "so none is written yet (%s)", exc)
            return False
        for write in taken:
            self.metrics.erased.labels(kind=write.kind).inc()
        if taken:
            log.info("store: %d waiting write(s) dropped: they name %d person(s) forgotten since (with %d crop(s))",
                     len(taken), len(erased), len(crops))
        return True

    def _flush_batch(self, batch: list[Write]) -> bool:
        """Make one batch of waiting writes; False when the store failed it (it stays, to be retried)."""
        head = batch[0]
        try:
            if head.record is not None:
                self.call(head.operation, self.inner.events.append, [w.record for w in batch])
            else:
                self.call(head.operation, head.apply, time.monotonic() - head.queued_at)
        except StoreUnavailableError:
            return False
        except StoreError as exc:
            self._failures += 1
            if self._failures < MAX_WRITE_FAILURES:
                return False
            self._failures = 0
            self._buffer.give_up(batch, f"failed {MAX_WRITE_FAILURES} times, last: {exc}")
            return True
        except Exception as exc:  # noqa: BLE001 - a write that can never be made: logged with its traceback, counted
            log.warning("store: a waiting %s write failed and is dropped: %r", head.operation, exc, exc_info=True)
            self._buffer.give_up(batch, f"{type(exc).__name__}: {exc}")
            return True
        self._failures = 0
        self._buffer.remove(batch)
        return True

    def pending(self) -> dict[str, int]:
        """Waiting writes per kind."""
        with self._lock:
            return self._buffer.depths()

    # ----- the Store ---------------------------------------------------------------------------------------
    def describe(self) -> str:
        return self.inner.describe()

    def finish_erasure(self, name: str) -> tuple[str, ...]:
        return self.inner.finish_erasure(name)

    def record_erasure(self, name: str) -> None:
        self.call("record_erasure", self.inner.record_erasure, name)

    def erased(self, names: Collection[str]) -> dict[str, float]:
        return self.call("read_erasures", self.inner.erased, names)

    def close(self) -> None:
        """Flush what waits (when the store allows a try), count what is left as dropped, close the store."""
        try:
            with self._lock:
                self.flush()
                left = self._buffer.give_up_all("the worker stopped before the store came back")
            if left:
                log.warning("store %s: %d buffered write(s) were never written (the store stayed unavailable)",
                            self.describe(), left)
        finally:
            self.inner.close()

    def __enter__(self) -> "BufferedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BufferedPersons:
    """The person gallery: search is timed (it is the local replica); everything else is a timed store call."""

    def __init__(self, owner: BufferedStore, inner: PersonGallery) -> None:
        self._o = owner
        self.inner = inner
        self._usable_names: dict[str, bool] = {}  # each name's check against the person-name rule, made once

    @property
    def model(self) -> str:
        return self.inner.model

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def face_count(self) -> int:
        return self.inner.face_count

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """The replica's hits, without persons whose names break the person-name rule (enrolled before the rule
        existed: a name with a control or invisible character cannot travel in an event, and would fail the
        whole batch); each such name is counted and logged once, and `argusnet forget NAME` removes it."""
        with self._o.timed("search"):
            rows = self.inner.search(embeddings, k)
        return [[hit for hit in row if self._usable(hit.name)] for row in rows]

    def _usable(self, name: str) -> bool:
        known = self._usable_names.get(name)
        if known is not None:
            return known
        problem = name_problem(name)
        self._usable_names[name] = problem is None
        if problem is None:
            return True
        self._o.metrics.names_refused.inc()
        log.warning("enrolled person %r is never named: %s (stored before the name rule; re-enrol under a valid "
                    "name and `argusnet forget` this one)", name, problem)
        return False

    def sync(self) -> bool:
        return self._o.sync("persons", self.inner.sync)

    def add_person(self, name: str, faces: Sequence[FaceSample]) -> list[int]:
        return self._o.call("write_persons", self.inner.add_person, name, faces)

    def remove_person(self, name: str, missing_ok: bool = False) -> int:
        return self._o.call("write_persons", self.inner.remove_person, name, missing_ok)

    def remove_faces(self, name: str, face_ids: Sequence[int]) -> int:
        return self._o.call("write_persons", self.inner.remove_faces, name, list(face_ids))

    def persons(self) -> list[PersonInfo]:
        return self._o.call("read_persons", self.inner.persons)

    def faces_of(self, name: str) -> list[StoredFace]:
        return self._o.call("read_persons", self.inner.faces_of, name)

    def all_faces(self) -> list[StoredFace]:
        return self._o.call("read_persons", self.inner.all_faces)

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        self._o.call("write_persons", self.inner.replace_embeddings, model, dim, embeddings)

    def close(self) -> None:
        self.inner.close()


class BufferedVisitors:
    """Visitors: ``seen`` and ``merge`` wait in the buffer when the store fails; ``match_or_create`` does not (it
    needs the store's atomic answer: StoreUnavailableError while it is unavailable)."""

    def __init__(self, owner: BufferedStore, inner: VisitorStore) -> None:
        self._o = owner
        self.inner = inner

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        with self._o.timed("search_visitors"):
            return self.inner.search(embeddings, k)

    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, max_faces: int) -> VisitorMatch:
        return self._o.call("match_or_create", self.inner.match_or_create, faces, threshold, max_faces)

    def seen(self, visitor: str, faces: Sequence[FaceSample], max_faces: int, when: float | None = None) -> None:
        when = time.time() if when is None else when
        faces = list(faces)
        self._o.write("visitors", "visitor_seen", lambda _age: self.inner.seen(visitor, faces, max_faces, when), None,
                      names=(visitor,))

    def merge(self, visitor: str, person: str, person_faces: Sequence[int] = (),
              live_tracks: Sequence[TrackRef] = ()) -> int:
        person_faces, live_tracks = list(person_faces), list(live_tracks)
        return self._o.write("visitors", "merge_visitor",
                             lambda _age: self.inner.merge(visitor, person, person_faces, live_tracks), 0,
                             names=(visitor, person))

    def merge_undo(self, visitor: str) -> MergeUndo | None:
        return self._o.call("read_visitors", self.inner.merge_undo, visitor)

    def unmerge(self, visitor: str) -> int:
        return self._o.call("write_visitors", self.inner.unmerge, visitor)

    def reject(self, visitor: str, not_name: str) -> None:
        self._o.call("write_visitors", self.inner.reject, visitor, not_name)

    def rejections(self) -> dict[str, frozenset[str]]:
        return self._o.call("rejections", self.inner.rejections)

    def faces_of(self, visitor: str) -> list[StoredFace]:
        return self._o.call("read_visitors", self.inner.faces_of, visitor)

    def all_faces(self) -> list[StoredFace]:
        return self._o.call("read_visitors", self.inner.all_faces)

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        self._o.call("write_visitors", self.inner.replace_embeddings, model, dim, embeddings)

    def list(self) -> list[VisitorInfo]:
        return self._o.call("read_visitors", self.inner.list)

    def merged_into(self, visitor: str) -> str | None:
        return self._o.call("read_visitors", self.inner.merged_into, visitor)

    def expire(self, older_than: float) -> list[str]:
        return self._o.call("expire_visitors", self.inner.expire, older_than)

    def remove(self, visitor: str) -> int:
        return self._o.call("write_visitors", self.inner.remove, visitor)

    def erase_references(self, name: str) -> ErasedReferences:
        return self._o.call("write_visitors", self.inner.erase_references, name)

    def sync(self) -> bool:
        return self._o.sync("visitors", self.inner.sync)

    def close(self) -> None:
        self.inner.close()


class BufferedNegatives:
    """Negative evidence: search is timed (the local replica); every other call goes to the store (an operator's
    change, never buffered)."""

    def __init__(self, owner: BufferedStore, inner: NegativeStore) -> None:
        self._o = owner
        self.inner = inner

    @property
    def model(self) -> str:
        return self.inner.model

    def add(self, person: str, faces: Sequence[FaceSample]) -> list[int]:
        return self._o.call("write_negatives", self.inner.add, person, faces)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        with self._o.timed("search_negatives"):
            return self.inner.search(embeddings, k)

    def faces_of(self, person: str) -> list[StoredFace]:
        return self._o.call("read_negatives", self.inner.faces_of, person)

    def remove_face(self, person: str, face_id: int) -> bool:
        return self._o.call("write_negatives", self.inner.remove_face, person, face_id)

    def erase(self, person: str) -> int:
        return self._o.call("write_negatives", self.inner.erase, person)

    def counts(self) -> dict[str, int]:
        return self._o.call("read_negatives", self.inner.counts)

    def all_faces(self) -> list[StoredFace]:
        return self._o.call("read_negatives", self.inner.all_faces)

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        self._o.call("write_negatives", self.inner.replace_embeddings, model, dim, embeddings)

    def sync(self) -> bool:
        return self._o.sync("negatives", self.inner.sync)

    def close(self) -> None:
        self.inner.close()


class BufferedMedia:
    def __init__(self, owner: BufferedStore, inner: MediaStore) -> None:
        self._o = owner
        self.inner = inner

    def put_crop(self, camera: str, track: int, crop: np.ndarray, when: float | None = None) -> str:
        """The crop's key, also when it waits (it is ``camera/track`` on every backend)."""
        when = time.time() if when is None else when
        crop = np.array(crop, dtype=np.uint8, copy=True)
        key = crop_key(camera, track)
        return self._o.write("crops", "put_crop", lambda _age: self.inner.put_crop(camera, track, crop, when), key,
                             crop=key)

    def get_crop(self, key: str) -> bytes:
        return self._o.call("read_crop", self.inner.get_crop, key)

    def remove(self, key: str) -> bool:
        return self._o.call("remove_crop", self.inner.remove, key)

    def expire(self, older_than: float) -> int:
        return self._o.call("expire_crops", self.inner.expire, older_than)

    def total_bytes(self) -> int:
        return self._o.call("read_crop", self.inner.total_bytes)

    def trim_to(self, max_bytes: int) -> int:
        return self._o.call("expire_crops", self.inner.trim_to, max_bytes)

    def close(self) -> None:
        self.inner.close()


class BufferedEvents:
    def __init__(self, owner: BufferedStore, inner: EventLog) -> None:
        self._o = owner
        self.inner = inner

    def append(self, records: Sequence[EventRecord]) -> list[int]:
        """The new ids, or [] when the events wait (their ids are handed out when they are written)."""
        records = list(records)
        return self._o.write_events(records, self.inner.append) if records else []

    def query(self, query: EventQuery) -> list[LoggedEvent]:
        return self._o.call("query_events", self.inner.query, query)

    def rename_identity(self, old: str, new: str) -> int:
        return self._o.write("events", "rename_events", lambda _age: self.inner.rename_identity(old, new), 0,
                             names=(old, new))

    def restore_identity(self, old: str, new: str) -> int:
        return self._o.call("rename_events", self.inner.restore_identity, old, new)

    def expire(self, older_than: float) -> int:
        return self._o.call("expire_events", self.inner.expire, older_than)

    def delete_identity(self, name: str) -> tuple[int, list[str]]:
        return self._o.call("expire_events", self.inner.delete_identity, name)

    def unname_track(self, camera: str, track: int, name: str) -> int:
        return self._o.call("rename_events", self.inner.unname_track, camera, track, name)

    def close(self) -> None:
        self.inner.close()


class BufferedLive:
    def __init__(self, owner: BufferedStore, inner: LiveTracks) -> None:
        self._o = owner
        self.inner = inner

    def put(self, track: LiveTrack, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: expected > 0, got {ttl_s}")
        self._o.write("live_tracks", "put_live", lambda age: self._put_late(track, ttl_s - age), None,
                      names=(track.name,))

    def _put_late(self, track: LiveTrack, ttl_left_s: float) -> None:
        """A put that waited gets what is left of its TTL; none left: it would have expired by now, so nothing."""
        if ttl_left_s > 0:
            self.inner.put(track, ttl_left_s)

    def remove(self, camera: str, track: int) -> None:
        self._o.write("live_tracks", "remove_live", lambda _age: self.inner.remove(camera, track), None)

    def alive(self, camera: str | None = None, now: float | None = None) -> list[LiveTrack]:
        return self._o.call("read_live", self.inner.alive, camera, now)

    def rename_identity(self, old: str, new: str) -> int:
        return self._o.write("live_tracks", "rename_live", lambda _age: self.inner.rename_identity(old, new), 0,
                             names=(old, new))

    def rename_tracks(self, old: str, new: str) -> list[TrackRef]:
        """The tracks renamed; none when the rename waits (the merge then keeps no live tracks to restore)."""
        return self._o.write("live_tracks", "rename_live", lambda _age: self.inner.rename_tracks(old, new), [],
                             names=(old, new))

    def restore_tracks(self, tracks: Sequence[TrackRef], old: str, new: str) -> int:
        return self._o.call("rename_live", self.inner.restore_tracks, list(tracks), old, new)

    def remove_identity(self, name: str) -> tuple[int, list[str]]:
        return self._o.call("remove_live", self.inner.remove_identity, name)

    def expire(self, now: float | None = None) -> int:
        return self._o.call("expire_live", self.inner.expire, now)

    def put_camera(self, status: CameraStatus, preview: bytes | None, ttl_s: float) -> None:
        """Not buffered: a status that cannot be written now is stale by the next one (a second later)."""
        self._o.call("put_camera", self.inner.put_camera, status, preview, ttl_s)

    def cameras(self, now: float | None = None) -> list[CameraStatus]:
        return self._o.call("read_live", self.inner.cameras, now)

    def preview(self, camera: str) -> bytes:
        return self._o.call("read_live", self.inner.preview, camera)

    def expire_cameras(self, now: float | None = None) -> int:
        return self._o.call("expire_live", self.inner.expire_cameras, now)

    def clear_previews(self) -> int:
        return self._o.call("remove_live", self.inner.clear_previews)

    def close(self) -> None:
        self.inner.close()


class BufferedAudit:
    """The audit log: an append waits in the buffer behind the write it records (a worker's automatic merge), so it
    is written after that write, in order, or dropped and counted with it; the record's ``ts`` is when it is
    written. Reads and forgets go to the store."""

    def __init__(self, owner: BufferedStore, inner: AuditTrail) -> None:
        self._o = owner
        self.inner = inner
        self.where = inner.where

    def append(self, actor: str | None = None, action: str = "", subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord | None:
        details = dict(details or {})
        return self._o.write("visitors", "audit_append",
                             lambda _age: self.inner.append(actor, action, subject, details), None,
                             names=(subject,))

    def forget_subject(self, name: str, actor: str | None = None) -> bool:
        return self._o.call("audit_forget", self.inner.forget_subject, name, actor)

    def list(self) -> list[AuditRecord]:
        return self._o.call("audit_read", self.inner.list)

    def verify(self) -> AuditReport:
        return self._o.call("audit_read", self.inner.verify)
