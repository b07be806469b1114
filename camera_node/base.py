"""What every frame source shares: the ``Source`` protocol, the ``Captured`` frame, ``SourceError``, the
real-time ``Timeline`` of pull sources and BGR -> RGB conversion. Sources yield RGB uint8 frames.

Two kinds of source, told apart by ``Source.live``:

- live sources (streams, USB devices) deliver frames at the device's own rate; ``read()`` blocks until the next
  frame arrives (bounded by OpenCV's read timeout), and the capture loop keeps only the frames it wants;
- pull sources (files, the demo) produce a frame when asked; the capture loop asks at its current rate. A paced
  file (``CameraConfig.pace``) and the demo follow a real-time ``Timeline``: asking late skips the frames that
  were due meanwhile, like a camera would, and asking early waits for the next one.

``read()`` returns None when no frame could be had: the source is lost (``ended`` False; the capture loop
reopens it with back-off) or a finite source is over (``ended`` True: a non-looping file at its end).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from shared.errors import ArgusError


class SourceError(ArgusError):
    """A source could not be opened (missing file, unreachable stream, absent device); the node retries."""


@dataclass(frozen=True, slots=True)
class FacePose:
    """Where a synthetic source drew its face (ground truth, in frame pixels): ``portrait_box`` is the pasted
    portrait and ``face_box`` the face inside it (x1, y1, x2, y2; either may extend past the frame);
    ``face_visible`` is True when the whole face box lies inside the frame."""

    index: int
    portrait_box: tuple[int, int, int, int]
    face_box: tuple[float, float, float, float]
    face_visible: bool


@dataclass(frozen=True, slots=True)
class Captured:
    """One frame from a source: (H, W, 3) uint8 RGB ``image``, ``capture_ts`` (wall clock, unix seconds) and,
    for synthetic sources, the ground-truth ``pose`` of the face drawn."""

    image: np.ndarray
    capture_ts: float
    pose: FacePose | None = None


@runtime_checkable
class Source(Protocol):
    """A frame source. ``live``: frames arrive at the device's rate (see module doc); ``ended``: a finite
    source is over and will give no more frames."""

    live: bool
    ended: bool

    def read(self) -> Captured | None:
        """The next frame, or None when the source is lost or over."""
        ...

    def close(self) -> None:
        """Release the device, stream or file."""
        ...


class Timeline:
    """Real-time schedule of a pull source: frame k is due ``k / rate`` seconds after the first read."""

    def __init__(self, rate: float, interrupt: threading.Event | None = None) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"timeline rate must be a positive finite number, got {rate!r}")
        self.rate = rate
        self._interrupt = interrupt if interrupt is not None else threading.Event()
        self._start: float | None = None

    def restart(self) -> None:
        """Start again: the next ``next_index`` returns 0 at once."""
        self._start = None

    def next_index(self, last: int) -> int | None:
        """Index of the next frame after ``last`` (-1 at the start), skipping frames already overdue and
        waiting for one not yet due; None when the interrupt event was set while waiting."""
        now = time.monotonic()
        if self._start is None or last < 0:
            self._start = now
            return 0
        index = max(last + 1, math.floor((now - self._start) * self.rate))
        delay = self._start + index / self.rate - now
        if delay > 0 and self._interrupt.wait(delay):
            return None
        return index


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (BGR, BGRA or grey) as a C-contiguous RGB uint8 array. A BGR frame OpenCV just decoded is
    converted in place (no second 2.7 MB buffer per 720p frame); ``frame`` must not be used as BGR afterwards."""
    if frame.dtype != np.uint8:
        raise SourceError(f"source frame must be uint8, got {frame.dtype.name}")
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    channels = frame.shape[2] if frame.ndim == 3 else 0
    if channels == 3:
        in_place = frame.flags.c_contiguous and frame.flags.writeable
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB, dst=frame if in_place else None)
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    raise SourceError(f"source frame must be grey, BGR or BGRA, got shape {frame.shape}")


def _retrieve(cap: cv2.VideoCapture, grabbed: bool) -> np.ndarray | None:
    """The decoded frame after a successful ``grab()``, or None."""
    if not grabbed:
        return None
    ok, frame = cap.retrieve()
    return frame if ok and frame is not None and frame.size else None
