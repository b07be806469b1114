"""The event printer: subscribe to the broker's event stream, print one line per event, optionally append JSONL.

A JSONL line is ``TrackEvent.to_json_dict()`` (type, camera, track, name, similarity, margin, ts, capture_ts, box,
time_to_name_ms, duration_s, visitor) plus ``latency_ms``: capture of the frame that caused the event -> event
printed, i.e. end to end through camera, broker, worker and event stream.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TextIO

import zmq

from shared.errors import InputError, ProtocolError
from shared.logs import RateLimitedLog
from shared.protocol import ProtocolConfig, TrackEvent, decode_as
from shared.zmq_defaults import EVENT_HWM, configure

log = logging.getLogger(__name__)
POLL_MS = 100
DRAIN_S = 0.5  # after a stop request, keep printing events already on their way for this long


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
                 context: zmq.Context | None = None) -> None:
        try:  # the file first: a path that cannot be written leaves no socket behind
            self.jsonl = None if jsonl is None else open(jsonl, "a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write events to {jsonl}: {exc}") from exc
        self.ctx = context or zmq.Context.instance()
        self.sub = configure(self.ctx.socket(zmq.SUB), hwm=EVENT_HWM)
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
            self.jsonl.flush()
        self.printed += 1

    def close(self) -> None:
        self.sub.close(0)
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
