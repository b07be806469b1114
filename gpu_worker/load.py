"""A worker's own measure of its load, and its warning when its cameras exceed what it sustains.

The processing thread reports how long it waited for a frame with nothing in progress (``idle``) and each frame
it finished (``finished``). A worker that was idle for less than SATURATED_IDLE of a whole window cannot keep up
with its cameras: their frames wait at the broker, which drops what it cannot hold (frames_dropped
{reason="queue_full"}), and latency grows. It says so once a minute, with the rate it sustains and its number of
cameras, so that an operator adds a worker or lowers the cameras' fps; ``argusnet_worker_busy_ratio`` is the share
of the last window it was busy."""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Gauge

from shared import metrics as m
from shared.logs import RateLimitedLog

log = logging.getLogger(__name__)

LOAD_WINDOW_S = 10.0  # the load is judged over windows this long
SATURATED_IDLE = 0.05  # idle for less than this share of a window: the cameras offer more than the worker sustains
WARN_EVERY_S = 60.0


class LoadMonitor:
    """Called from the processing thread only."""

    def __init__(self, worker_id: str, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.busy = Gauge(m.WORKER_BUSY, "Share of the last load window the worker's processing thread was busy "
                          f"({LOAD_WINDOW_S:.0f} s windows; near 1: its cameras offer more than it sustains)",
                          registry=registry)
        self.rate_log = RateLimitedLog(log, WARN_EVERY_S)
        self._start = clock()
        self._idle = 0.0
        self._frames = 0
        self._cameras: set[str] = set()

    def idle(self, seconds: float) -> None:
        self._idle += seconds
        self._tick()

    def finished(self, cameras: Iterable[str]) -> None:
        """Frames finished, one camera id each."""
        for camera in cameras:
            self._frames += 1
            self._cameras.add(camera)
        self._tick()

    def _tick(self) -> None:
        now = self.clock()
        span = now - self._start
        if span < LOAD_WINDOW_S:
            return
        idle_share = min(1.0, self._idle / span)
        self.busy.set(1.0 - idle_share)
        if idle_share < SATURATED_IDLE and self._cameras:
            self.rate_log.warning(
                "saturated", "worker %s cannot keep up with its %d camera(s): busy %.0f%% of the last %.0f s, "
                "processing %.1f frames/s; their frames wait at the broker, which drops what it cannot hold (add "
                "a worker, or lower the cameras' fps)", self.worker_id, len(self._cameras),
                100.0 * (1.0 - idle_share), span, self._frames / span)
        self._start, self._idle, self._frames, self._cameras = now, 0.0, 0, set()
