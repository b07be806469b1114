"""The event printer: subscribe to the broker's event stream, print one line per event, optionally append JSONL.

A JSONL line is ``TrackEvent.to_json_dict()`` (type, camera, track, name, similarity, margin, ts, capture_ts, box,
time_to_name_ms, duration_s, visitor) plus ``latency_ms``: capture of the frame that caused the event -> event
printed, i.e. end to end through camera, broker, worker and event stream.

The JSONL file is opened for each write (append, flushed, closed), so a file that cannot be written for a while
(a full disk, a path replaced by a directory, a mount gone) costs no event: lines wait in order in a bounded
buffer (``JSONL_BUFFER`` lines; beyond it the oldest are dropped and counted), the failure is reported once a
minute, and the buffer is written out as soon as a write succeeds again (tried with every event and every
``RETRY_S``).

``StoreEventReader`` (``argusnet events --from-store``) reads the store's durable event log instead, oldest first
from a cursor (the id of the last event written, kept in a small JSON file replaced atomically after each batch),
and polls it every ``STORE_POLL_S``: a printer that was down catches up from where it stopped, every event once.
Its JSONL lines carry the log's ``id`` besides the live fields; ``latency_ms`` is capture -> read from the log.
While the JSONL file cannot be written, no further events are read (the log keeps them) and the cursor stays at
the last line written.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from pathlib import Path
from typing import TextIO

import zmq

from shared.errors import InputError, ProtocolError, StoreUnavailableError
from shared.files import atomic_write
from shared.keys import CurveClient
from shared.logs import RateLimitedLog
from shared.protocol import ProtocolConfig, TrackEvent, decode_as
from shared.zmq_defaults import EVENT_HWM, configure
from store.base import EventLog
from store.types import EventQuery, LoggedEvent

log = logging.getLogger(__name__)
POLL_MS = 100
DRAIN_S = 0.5  # after a stop request, keep printing events already on their way for this long
JSONL_BUFFER = 100_000  # JSONL lines kept while the file cannot be written
RETRY_S = 1.0  # how often a failed JSONL file is tried again when no event comes
STORE_POLL_S = 0.5  # how often the event log is asked for events newer than the cursor
STORE_BATCH = 500  # events read from the log per query (a full batch is followed at once by the next)


class JsonlWriter:
    """Appends lines to a file in order, keeping them while the file cannot be written (see the module doc)."""

    def __init__(self, path: Path, limit: int = JSONL_BUFFER) -> None:
        self.path = Path(path)
        self.limit = limit
        self.pending: collections.deque[str] = collections.deque()
        self.dropped = 0
        self.failing = False
        self._retry_at = 0.0
        self._rate_log = RateLimitedLog(log)
        try:  # the file must be writable at start: a bad path is the user's error, reported before any socket
            with open(self.path, "a", encoding="utf-8"):
                pass
        except OSError as exc:
            raise InputError(f"cannot write events to {self.path}: {exc}") from exc

    def write(self, line: str) -> None:
        if len(self.pending) >= self.limit:
            self.pending.popleft()
            self.dropped += 1
            self._rate_log.warning("jsonl_dropped", "events file %s unwritable: %d oldest line(s) dropped so far",
                                   self.path, self.dropped)
        self.pending.append(line)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Write what waits; on failure keep it and try again later (at once when ``force``)."""
        if not self.pending or (self.failing and not force and time.monotonic() < self._retry_at):
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                while self.pending:
                    f.write(self.pending[0])
                    f.flush()
                    self.pending.popleft()
        except OSError as exc:
            self.failing, self._retry_at = True, time.monotonic() + RETRY_S
            self._rate_log.warning("jsonl_write", "cannot write events to %s (%s): %d line(s) kept, retrying",
                                   self.path, exc, len(self.pending))
            return
        if self.failing:
            log.warning("events file %s writable again: all kept lines written", self.path)
        self.failing = False


def describe(event: TrackEvent, latency_ms: float) -> str:
    """One human line: what happened to which track, and how long after capture we heard of it."""
    where = f"[{event.camera}] track {event.track}"
    if event.type == "track_identified":
        who = f"{event.name} (visitor)" if event.visitor else event.name
        sim = "" if event.similarity is None else f", similarity {event.similarity:.3f}"
        named = "" if event.time_to_name_ms is None else f", named {event.time_to_name_ms:.0f} ms after it started"
        return f"{where} identified: {who}{sim}{named}; end-to-end latency {latency_ms:.0f} ms"
    if event.type == "track_ended":
        length = "" if event.duration_s is None else f" after {event.duration_s:.1f} s"
        return f"{where} ended{length} ({event.name or 'unknown'})"
    return f"{where} {event.type.removeprefix('track_')}; end-to-end latency {latency_ms:.0f} ms"


class EventPrinter:
    """SUB socket on the broker's events endpoint; ``run(stop)`` prints until ``stop`` is set."""

    def __init__(self, endpoint: str, protocol: ProtocolConfig, out: TextIO, jsonl: Path | None = None,
                 context: zmq.Context | None = None, curve: CurveClient | None = None) -> None:
        self.jsonl = None if jsonl is None else JsonlWriter(jsonl)  # first: a bad path leaves no socket behind
        self.ctx = context or zmq.Context.instance()
        self.sub = configure(self.ctx.socket(zmq.SUB), hwm=EVENT_HWM)
        if curve is not None:  # security.curve: the broker's events-out socket takes allow-listed subscribers only
            curve.apply(self.sub)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(endpoint)
        self.max_bytes = protocol.max_message_bytes
        self.out = out
        self.rate_log = RateLimitedLog(log)
        self.printed = 0

    def run(self, stop: threading.Event) -> None:
        stop_seen: float | None = None
        try:
            while stop_seen is None or time.monotonic() - stop_seen < DRAIN_S:
                if stop_seen is None and stop.is_set():
                    stop_seen = time.monotonic()
                if self.sub.poll(POLL_MS):
                    self._on_message(self.sub.recv_multipart())
                elif self.jsonl is not None:
                    self.jsonl.flush()
        finally:
            self.close()

    def _on_message(self, parts: list[bytes]) -> None:
        try:
            event = decode_as(TrackEvent, parts[-1], self.max_bytes)
        except ProtocolError as exc:
            self.rate_log.warning(exc.reason, "skipped a bad event (%s): %s", exc.reason, exc)
            return
        latency_ms = max(0.0, (time.time() - event.capture_ts) * 1000.0)
        print(describe(event, latency_ms), file=self.out, flush=True)
        if self.jsonl is not None:
            record = {**event.to_json_dict(), "latency_ms": round(latency_ms, 1)}
            self.jsonl.write(json.dumps(record) + "\n")
        self.printed += 1

    def close(self) -> None:
        self.sub.close(0)
        if self.jsonl is not None:
            self.jsonl.flush(force=True)
            if self.jsonl.pending:
                log.error("events file %s still unwritable at exit: %d event line(s) not written", self.jsonl.path,
                          len(self.jsonl.pending))
            self.jsonl = None


def load_cursor(path: Path) -> int | None:
    """The id of the last event written, from a cursor file (None when the file does not exist yet)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"cannot read the cursor file {path}: {exc}") from exc
    try:
        after_id = json.loads(text)["after_id"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path} is not a cursor file (expected {{\"after_id\": N}}): {exc}") from exc
    if not isinstance(after_id, int) or isinstance(after_id, bool) or after_id < 0:
        raise InputError(f"{path}: after_id must be an integer >= 0, got {after_id!r}")
    return after_id


def save_cursor(path: Path, after_id: int) -> None:
    atomic_write(path, (json.dumps({"after_id": after_id}) + "\n").encode(), durable=True)


class StoreEventReader:
    """Prints (and appends as JSONL) the events of a store's event log after a cursor, oldest first, polling for
    new ones until ``stop`` is set; the cursor file, if given, is saved after every batch."""

    def __init__(self, events: EventLog, out: TextIO, jsonl: Path | None = None, cursor: Path | None = None) -> None:
        self.jsonl = None if jsonl is None else JsonlWriter(jsonl)
        self.events = events
        self.out = out
        self.cursor = cursor
        self.after_id = None if cursor is None else load_cursor(cursor)
        self.rate_log = RateLimitedLog(log)
        self.printed = 0
        self._unsaved: list[int] = []  # ids of the batch whose lines still wait in the JSONL writer

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._unsaved:
                self._confirm(force=True)
                if self._unsaved:  # the file is still unwritable: read nothing more, the log keeps it
                    stop.wait(RETRY_S)
                    continue
            batch = self._read()
            if batch:
                self._write(batch)
            if len(batch) < STORE_BATCH:
                stop.wait(STORE_POLL_S)
        if self._unsaved:
            self._confirm(force=True)
            if self._unsaved:
                log.error("events file %s still unwritable at exit: %d event(s) after id %s not written; they "
                          "are read again from the log next time", self.jsonl.path, len(self._unsaved),
                          self.after_id)

    def _read(self) -> list[LoggedEvent]:
        try:
            return self.events.query(EventQuery(after_id=self.after_id, limit=STORE_BATCH, oldest_first=True))
        except StoreUnavailableError as exc:
            self.rate_log.warning("store_unavailable", "event log unavailable (%s): reading again in %.1f s",
                                  exc, STORE_POLL_S)
            return []

    def _write(self, batch: list[LoggedEvent]) -> None:
        now = time.time()
        for logged in batch:
            event = logged.event
            latency_ms = max(0.0, (now - event.capture_ts) * 1000.0)
            print(describe(event, latency_ms), file=self.out, flush=True)
            if self.jsonl is not None:
                record = {"id": logged.id, **event.to_json_dict(), "latency_ms": round(latency_ms, 1)}
                self.jsonl.write(json.dumps(record) + "\n")
            self.printed += 1
        self._unsaved = [logged.id for logged in batch]
        self._confirm(force=False)

    def _confirm(self, force: bool) -> None:
        """Move the cursor to the last event whose line is written (all of them without a JSONL file) and save
        it."""
        if self.jsonl is not None:
            self.jsonl.flush(force=force)
        waiting = 0 if self.jsonl is None else len(self.jsonl.pending)
        written = len(self._unsaved) - waiting
        if written <= 0:
            return
        self.after_id, self._unsaved = self._unsaved[written - 1], self._unsaved[written:]
        if self.cursor is not None:
            save_cursor(self.cursor, self.after_id)
