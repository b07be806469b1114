"""The cameras a worker served lately: the claims its heartbeats carry to every broker it serves.

Brokers share no state. A broker that must choose a worker for a camera that has none there (a camera failing over
from a broker that died, one whose worker died) prefers a live worker that claims the camera (``broker.routing``),
so the camera stays on the worker that holds its tracks. A worker claims the cameras whose frames it processed in
the last ``SERVED_S`` seconds, read from its frames-processed counter (``argusnet_frames_out_total{camera}``, which
counts only frames that reached the tracker: stale and undecodable frames are not served). ``SERVED_S`` covers a
camera's failover: ``DEAD_AFTER_S`` (1.5 s) for the camera to notice its broker is gone, its reconnect, and one
heartbeat interval for the claim to reach the next broker, with room for a loaded host; a longer window would only
keep claims of cameras moved away from it alive longer.

A worker whose heartbeats stopped for longer than ``DEAD_AFTER_S`` (``claims`` not called for that long: the I/O
thread, which heartbeats every ``HEARTBEAT_INTERVAL_S``, did not run) has been declared dead, and it drops every
track it held (``gpu_worker.service``): it claims nothing it served before such a pause, so a revived worker never
draws back, through another broker, the cameras that were moved away from it. At most ``limit`` cameras (the most
recently served) are claimed, bounded by the heartbeat's ``MAX_CAMERAS``.
"""

from __future__ import annotations

from prometheus_client import Counter

from shared.protocol import MAX_CAMERAS
from shared.zmq_defaults import DEAD_AFTER_S

SERVED_S = 5.0
REFRESH_S = 0.25  # the claims are read from the counter at most this often (heartbeats go out per finished batch)


class ServedCameras:
    """Claims from a per-camera counter of processed frames (labelled ``camera``). Times are seconds of a
    monotonic clock, passed in by the caller; one thread only (the worker's I/O thread)."""

    def __init__(self, processed: Counter, window_s: float = SERVED_S, limit: int = MAX_CAMERAS) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        if not 1 <= limit <= MAX_CAMERAS:
            raise ValueError(f"limit must be in [1, {MAX_CAMERAS}], got {limit!r}")
        self._processed = processed
        self.window_s = window_s
        self.limit = limit
        self._counts: dict[str, float] = {}  # per camera: the counter's value at the last reading
        self._served: dict[str, float] = {}  # per camera: when its count was last seen rising
        self._checked: float | None = None
        self._claims: tuple[str, ...] = ()

    def claims(self, now: float) -> tuple[str, ...]:
        """The cameras served in the last ``window_s`` seconds (since the last pause), most recent first."""
        if self._checked is not None and 0.0 <= now - self._checked < REFRESH_S:
            return self._claims
        paused = self._checked is not None and now - self._checked > DEAD_AFTER_S
        self._checked = now
        counts = self._read()
        if paused:
            self._served.clear()
        else:
            for camera, count in counts.items():
                if count > self._counts.get(camera, 0.0):
                    self._served[camera] = now
        self._counts = counts
        for camera in [c for c, t in self._served.items() if now - t > self.window_s]:
            del self._served[camera]
        recent = sorted(self._served, key=lambda c: (-self._served[c], c))
        self._claims = tuple(recent[:self.limit])
        return self._claims

    def _read(self) -> dict[str, float]:
        counts: dict[str, float] = {}
        for family in self._processed.collect():
            for sample in family.samples:
                if sample.name == family.name + "_total" and "camera" in sample.labels:
                    counts[sample.labels["camera"]] = sample.value
        return counts
