"""Track ids and tracking epochs that no other session of this process, and no earlier run of it, used."""

from __future__ import annotations

import threading
import time


class SessionIds:
    """Track ids and tracking epochs (``TrackEvent.track``, ``.epoch``): integers that no other tracking session of
    this process, and no earlier run of it, used. Each is the wall clock in microseconds, or one more than the
    previous one when that is not below it: strictly increasing within a process, and a restarted process starts
    above every id its previous run gave out (a process gives out far fewer than one id a microsecond). They fit
    the wire's and the store's integers, and stay below 2**53 (exact in JavaScript) until the year 2255."""

    def __init__(self, clock_ns=time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, self._clock_ns() // 1000)
            return self._last


SESSION_IDS = SessionIds()  # one per process: every camera's tracks and epochs draw from it
