"""What a worker checks of a frame before it spends memory on it: a camera node may be hostile or broken.

- The JPEG header is read (``simplejpeg.decode_jpeg_header``, no pixel decoded) and the frame refused when it
  declares more than ``worker.max_frame_pixels`` pixels (a 4.2 MB JPEG of 16384x16384 decodes to 805 MB) or a size
  other than the frame's declared ``width`` x ``height``.
- ``capture_ts`` is clamped to ``worker.capture_window_s`` around the time the frame was received: one frame dated a
  day ahead must not set the camera's usual delay a day back (every later frame would look held up).
- ``CameraBook`` bounds the cameras the worker keeps state for: at most ``worker.max_cameras`` at once (a flood of
  new camera ids is refused), and a camera silent for ``worker.camera_forget_s`` is forgotten (its per-camera state
  and metric series removed by the caller).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import simplejpeg

from shared.protocol import Frame


@dataclass(frozen=True)
class Refusal:
    """Why a frame is not decoded: ``reason`` is a ``frames_dropped`` reason label (shared.metrics)."""

    reason: str
    message: str


def check_header(frame: Frame, max_pixels: int) -> Refusal | None:
    """None when the frame's JPEG header is readable, within ``max_pixels`` and of the frame's declared size."""
    try:
        height, width, _colorspace, _subsampling = simplejpeg.decode_jpeg_header(frame.jpeg)
    except ValueError as exc:
        return Refusal("bad_jpeg", f"unreadable JPEG header: {exc}")
    if width * height > max_pixels:
        return Refusal("too_large", f"its JPEG is {width}x{height} = {width * height} pixels, over the limit of "
                       f"{max_pixels} (worker.max_frame_pixels); not decoded")
    if (width, height) != (frame.width, frame.height):
        return Refusal("size_mismatch", f"its JPEG is {width}x{height} but the frame declares "
                       f"{frame.width}x{frame.height}; not decoded")
    return None


@dataclass(frozen=True)
class CaptureTime:
    """A frame's capture time as the worker uses it, and which way it was clamped (None: it was plausible)."""

    ts: float
    clamped: str | None = None  # "future" or "past" (shared.metrics.CLAMP_DIRECTIONS)


def clamp_capture(capture_ts: float, received: float, window_s: float) -> CaptureTime:
    """``capture_ts`` within ``window_s`` of ``received`` (both unix seconds)."""
    if capture_ts > received + window_s:
        return CaptureTime(received + window_s, "future")
    if capture_ts < received - window_s:
        return CaptureTime(received - window_s, "past")
    return CaptureTime(capture_ts)


class Admission(enum.Enum):
    KNOWN = "known"
    NEW = "new"  # first frame (or first since it was forgotten): its per-camera series start at 0
    REFUSED = "refused"  # the worker holds max_cameras others


class CameraBook:
    """The cameras a worker keeps state for, with when each sent its latest frame (monotonic seconds). One thread
    (the worker's I/O thread)."""

    def __init__(self, limit: int, forget_s: float) -> None:
        if limit < 1 or not forget_s > 0:
            raise ValueError(f"limit must be >= 1 and forget_s > 0, got {limit!r}, {forget_s!r}")
        self.limit = limit
        self.forget_s = forget_s
        self._seen: dict[str, float] = {}

    def __contains__(self, camera: str) -> bool:
        return camera in self._seen

    def __len__(self) -> int:
        return len(self._seen)

    def admit(self, camera: str, now: float) -> Admission:
        if camera in self._seen:
            self._seen[camera] = now
            return Admission.KNOWN
        if len(self._seen) >= self.limit:
            return Admission.REFUSED
        self._seen[camera] = now
        return Admission.NEW

    def forget_idle(self, now: float) -> list[str]:
        """The cameras silent for longer than ``forget_s``, now forgotten."""
        idle = [camera for camera, seen in self._seen.items() if now - seen > self.forget_s]
        for camera in idle:
            del self._seen[camera]
        return idle
