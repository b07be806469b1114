"""The capture thread: read the source at the flow controller's rate, downscale, drop unchanged frames (motion
gate, with a keep-alive), and put frames in a small drop-oldest queue. It never waits on the network; a lost
source is reopened with exponential back-off."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from camera_node.base import Captured, Source, SourceError
from camera_node.config import CameraConfig

log = logging.getLogger(__name__)

REOPEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
MOTION_SIDE = 64  # the motion gate compares 64 px wide grey thumbnails


@dataclass(frozen=True)
class CapturedFrame:
    """A frame waiting to be sent: ``capture_ts`` (wall clock) goes on the wire; ``read_at`` (monotonic, when the
    loop read it) times capture -> send here, immune to clock steps."""

    seq: int
    capture_ts: float
    image: np.ndarray
    read_at: float


class FrameQueue:
    """Bounded FIFO; putting into a full queue drops the oldest frame and returns it."""

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[CapturedFrame] = collections.deque()
        self.maxlen = maxlen
        self._lock = threading.Lock()

    def put(self, item: CapturedFrame) -> CapturedFrame | None:
        with self._lock:
            dropped = self._items.popleft() if len(self._items) >= self.maxlen else None
            self._items.append(item)
            return dropped

    def get(self) -> CapturedFrame | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class MotionGate:
    """Says whether a frame differs enough from the last one let through, or a keep-alive is due."""

    def __init__(self, threshold: float, keepalive_s: float) -> None:
        self.threshold, self.keepalive_s = threshold, keepalive_s
        self._last: np.ndarray | None = None
        self._last_ts = float("-inf")

    def passes(self, image: np.ndarray, now: float) -> bool:
        step = max(1, image.shape[1] // MOTION_SIDE)  # plain subsampling: cheap, and enough to see change
        thumb = cv2.cvtColor(np.ascontiguousarray(image[::step, ::step]), cv2.COLOR_RGB2GRAY).astype(np.int16)
        changed = self._last is None or self._last.shape != thumb.shape or \
            float(np.abs(thumb - self._last).mean()) >= self.threshold
        if changed or now - self._last_ts >= self.keepalive_s:
            self._last, self._last_ts = thumb, now
            return True
        return False


class CaptureLoop:
    """Runs in its own thread until ``stop`` is set; counts through the ``count(reason)`` callback."""

    def __init__(self, cfg: CameraConfig, open_source: Callable[[], Source], queue: FrameQueue,
                 fps: Callable[[], float], count: Callable[[str], None]) -> None:
        self.cfg, self.open_source, self.queue, self.fps, self.count = cfg, open_source, queue, fps, count
        self.gate = MotionGate(cfg.motion_threshold, cfg.keepalive_s) if cfg.motion_gate else None
        self.seq = 0
        self.reopens = 0

    def run(self, stop: threading.Event) -> None:
        source: Source | None = None
        failures = 0
        next_due = 0.0
        while not stop.is_set():
            if source is None:
                source, failures = self._open(stop, failures)
                continue
            if not source.live and stop.wait(max(0.0, next_due - time.monotonic())):
                break  # a pull source is asked only when the next frame is wanted
            frame = self._read(source)
            if frame is None:
                if source.ended:
                    log.info("camera %s: source %s ended", self.cfg.id, self.cfg.source)
                    break
                source.close()
                source = None
                continue
            failures = 0
            now = time.monotonic()
            if source.live and now < next_due:  # a device faster than our rate: keep only the frames we want
                continue
            next_due = max(next_due + 1.0 / self.fps(), now) if source.live else now + 1.0 / self.fps()
            self._offer(frame.image, frame.capture_ts, now)
        if source is not None:
            source.close()

    def _read(self, source: Source) -> Captured | None:
        """A frame, or None when the source has nothing (ended, or lost: then it is closed and reopened). A frame
        the source cannot deliver (undecodable, wrong shape) is a lost source too, never the end of the loop."""
        try:
            return source.read()
        except SourceError as exc:
            log.warning("camera %s: %s; reopening the source", self.cfg.id, exc)
            self.count("read_error")
            return None

    def _open(self, stop: threading.Event, failures: int) -> tuple[Source | None, int]:
        try:
            source = self.open_source()
            if failures:
                self.reopens += 1
                self.count("reopened")
            return source, 0
        except SourceError as exc:
            delay = REOPEN_BACKOFF_S[min(failures, len(REOPEN_BACKOFF_S) - 1)]
            log.warning("camera %s: %s; retrying in %.1f s", self.cfg.id, exc, delay)
            stop.wait(delay)
            return None, failures + 1

    def _offer(self, image: np.ndarray, capture_ts: float, now: float) -> None:
        small = downscale(image, self.cfg.max_side)
        seq = self.seq
        self.seq += 1
        self.count("captured")
        if self.gate is not None and not self.gate.passes(small, now):
            self.count("unchanged")
            return
        if self.queue.put(CapturedFrame(seq, capture_ts, small, now)) is not None:
            self.count("queue_full")
