"""The capture thread: read the source at the flow controller's rate, downscale to its size, drop unchanged frames
(motion gate, with a keep-alive), JPEG-encode at its quality and put the JPEG in a small drop-oldest queue. It
never waits on the network; a lost source is reopened with exponential back-off.

Frames are encoded here rather than when they are sent: the queue then holds JPEGs (about 30-150 KB) instead of
decoded frames (2.7 MB each at 720p), and a frame is ready to go the moment a credit comes back. Reads of a pull
source are scheduled on a fixed grid (1 / fps apart), not from the end of the previous read, so the time a read
takes does not lower the rate."""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import simplejpeg

from camera_node.base import Captured, Source, SourceError
from camera_node.config import CameraConfig
from camera_node.sources import shown_source
from shared.logs import RateLimitedLog

log = logging.getLogger(__name__)

REOPEN_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
MOTION_SIDE = 64  # the motion gate compares 64 px wide grey thumbnails
OPEN_FAILED = "cannot open its source"  # in the line a camera logs (`argusnet up` shows it on its console)
OPEN_FAILED_REPEAT_S = 60.0  # a source that keeps failing to open is logged again this often


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG with simplejpeg's fast DCT (about a third faster; the loss is below what quality 85 already costs)."""
    return simplejpeg.encode_jpeg(image, quality=int(quality), colorspace="RGB", fastdct=True)


@dataclass(frozen=True)
class CapturedFrame:
    """A frame waiting to be sent, already encoded: ``capture_ts`` (wall clock) goes on the wire; ``read_at``
    (monotonic, when the loop read it) times capture -> send here, immune to clock steps; ``width`` x ``height``
    and ``quality`` are those of the JPEG, ``source_side`` the longer side of the frame before downscaling."""

    seq: int
    capture_ts: float
    jpeg: bytes
    read_at: float
    width: int
    height: int
    quality: int
    source_side: int


class FrameQueue:
    """Bounded FIFO; putting into a full queue drops the oldest frame and returns it. ``offered``: frames put so
    far (the rate frames are offered to the sender, whether or not they are sent)."""

    def __init__(self, maxlen: int) -> None:
        self._items: collections.deque[CapturedFrame] = collections.deque()
        self.maxlen = maxlen
        self.offered = 0
        self._lock = threading.Lock()

    def put(self, item: CapturedFrame) -> CapturedFrame | None:
        with self._lock:
            dropped = self._items.popleft() if len(self._items) >= self.maxlen else None
            self._items.append(item)
            self.offered += 1
            return dropped

    def get(self) -> CapturedFrame | None:
        with self._lock:
            return self._items.popleft() if self._items else None

    def peek(self) -> CapturedFrame | None:
        """The oldest frame, left in the queue (the capture thread may still drop it)."""
        with self._lock:
            return self._items[0] if self._items else None

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
    """Runs in its own thread until ``stop`` is set; counts through the ``count(reason)`` callback. ``fps``,
    ``max_side`` and ``quality`` are read for every frame (the flow controller's current settings; the camera's
    own by default)."""

    def __init__(self, cfg: CameraConfig, open_source: Callable[[], Source], queue: FrameQueue,
                 fps: Callable[[], float], count: Callable[[str], None], max_side: Callable[[], int] | None = None,
                 quality: Callable[[], int] | None = None, open_failed: Callable[[], None] | None = None) -> None:
        self.cfg, self.open_source, self.queue, self.fps, self.count = cfg, open_source, queue, fps, count
        self.open_failed = open_failed or (lambda: None)  # counts each failed open (the node's metric)
        self.open_log = RateLimitedLog(log, OPEN_FAILED_REPEAT_S)
        self.max_side = max_side or (lambda: cfg.max_side)
        self.quality = quality or (lambda: cfg.jpeg_quality)
        self.gate = MotionGate(cfg.motion_threshold, cfg.keepalive_s) if cfg.motion_gate else None
        self.seq = 0
        self.reopens = 0

    def run(self, stop: threading.Event) -> None:
        source: Source | None = None
        failures = 0
        next_due = 0.0  # when the next frame is wanted: reads follow a grid of 1 / fps, whatever a read takes
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
            next_due = max(next_due + 1.0 / self.fps(), now)  # late (a slow read): the next one at once, no debt
            self._offer(frame.image, frame.capture_ts, now)
            frame = None  # the decoded frame (2.7 MB at 720p) is not kept while the loop waits for the next one
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
        """The opened source, or None after a failed open (counted, logged when it starts failing and then once
        a minute) and its back-off."""
        try:
            source = self.open_source()
        except SourceError as exc:
            delay = REOPEN_BACKOFF_S[min(failures, len(REOPEN_BACKOFF_S) - 1)]
            self.open_failed()
            self.open_log.warning("open", "camera %s %s %s: %s; retrying with back-off (up to %.0f s), said again "
                                  "every %.0f s while it fails", self.cfg.id, OPEN_FAILED,
                                  shown_source(self.cfg.source), exc, REOPEN_BACKOFF_S[-1], OPEN_FAILED_REPEAT_S)
            stop.wait(delay)
            return None, failures + 1
        if failures:
            self.reopens += 1
            self.count("reopened")
            log.info("camera %s: source %s open after %d failed tries", self.cfg.id, shown_source(self.cfg.source),
                     failures)
            self.open_log = RateLimitedLog(log, OPEN_FAILED_REPEAT_S)  # a later failure is said at once again
        return source, 0

    def _offer(self, image: np.ndarray, capture_ts: float, now: float) -> None:
        small = downscale(image, self.max_side())
        seq = self.seq
        self.seq += 1
        self.count("captured")
        if self.gate is not None and not self.gate.passes(small, now):
            self.count("unchanged")
            return
        quality = int(self.quality())
        h, w = small.shape[:2]
        item = CapturedFrame(seq, capture_ts, encode_jpeg(small, quality), now, w, h, quality, max(image.shape[:2]))
        if self.queue.put(item) is not None:
            self.count("queue_full")
