"""What a worker writes to the store besides identities: the event log, the live tracks and track crops.

``TrackRecorder`` collects a batch's events with the crop key of each ended track, appends them to the event log in
one write, and keeps each live track's entry fresh (at most every ``LIVE_REFRESH_S``, with the configured TTL, so
the tracks of a worker that dies expire by themselves). A store that fails a write is logged once a minute and
counted in ``errors``; recognition goes on (the events still reach subscribers over the wire). A worker's store
(`store.buffered.BufferedStore`) keeps such writes in a buffer and writes them when the store is back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Sequence

from shared.errors import ArgusError
from shared.logs import RateLimitedLog
from shared.protocol import TrackEvent
from store.base import Store
from store.types import EventRecord, LiveTrack

log = logging.getLogger(__name__)
LIVE_REFRESH_S = 1.0  # a live track's entry is rewritten at most this often (and on every change of name)


class TrackRecorder:
    def __init__(self, store: Store, live_ttl_s: float, worker: str | None = None) -> None:
        self.store = store
        self.live_ttl_s = live_ttl_s
        self.worker = worker
        self.errors: Counter[str] = Counter()
        self._pending: list[EventRecord] = []
        self._live_written: dict[tuple[str, int], float] = {}
        self._rate_log = RateLimitedLog(log)

    def failed(self, operation: str, exc: Exception) -> None:
        """Count a failed store operation (the processor's too) and log it at most once a minute."""
        self.errors[operation] += 1
        self._rate_log.warning(operation, "store %s failed (recognition goes on): %s", operation, exc)

    def save_crop(self, camera: str, track: int, crop) -> str | None:
        try:
            return self.store.media.put_crop(camera, track, crop)
        except (ArgusError, OSError) as exc:
            self.failed("put_crop", exc)
            return None

    def event(self, event: TrackEvent, crop: str | None = None) -> TrackEvent:
        self._pending.append(EventRecord(event, crop, self.worker))
        return event

    def flush(self) -> None:
        """Append this batch's events to the event log in one write."""
        records, self._pending = self._pending, []
        if not records:
            return
        try:
            self.store.events.append(records)
        except (ArgusError, OSError) as exc:
            self.failed("append_events", exc)

    def discard(self) -> int:
        """Drop the events not yet written (a batch the worker judged stale: never published, never logged)."""
        dropped, self._pending = len(self._pending), []
        return dropped

    def live(self, track: LiveTrack, force: bool = False) -> None:
        key = (track.camera, track.track)
        now = time.monotonic()
        if not force and now - self._live_written.get(key, float("-inf")) < LIVE_REFRESH_S:
            return
        try:
            self.store.live.put(track, self.live_ttl_s)
            self._live_written[key] = now
        except (ArgusError, OSError) as exc:
            self.failed("put_live", exc)

    def ended(self, camera: str, track: int) -> None:
        self._live_written.pop((camera, track), None)
        try:
            self.store.live.remove(camera, track)
        except (ArgusError, OSError) as exc:
            self.failed("remove_live", exc)

    def pending(self) -> Sequence[EventRecord]:
        return tuple(self._pending)
