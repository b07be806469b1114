"""Camera previews: about once a second per camera, a small JPEG of its latest frame with each live track's box and
name, and the camera's status (fps received, frames missing from its sequence, live tracks), written to the store
for the dashboard (`LiveTracks.put_camera`). Both expire ``ttl_s`` after the last refresh, so a camera nobody
serves any more shows as offline and its last picture does not linger.

Names are drawn with OpenCV's Hershey font, which has only ASCII: other characters are drawn as ``?`` (the
dashboard shows the real names beside the picture)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np
import simplejpeg
from pydantic import Field

from shared.errors import ArgusError
from shared.schema import Section
from store.base import LiveTracks
from store.types import CameraStatus

NAMED_RGB = (40, 200, 80)
UNKNOWN_RGB = (240, 180, 40)


class PreviewConfig(Section):
    interval_s: float = Field(default=1.0, ge=0.0, le=3600.0, description="How often each camera's annotated "
                              "preview and status are written to the store; 0 = never.")
    max_side: int = Field(default=640, ge=64, le=4096, description="Previews are downscaled to this longer side.")
    jpeg_quality: int = Field(default=70, ge=10, le=100, description="JPEG quality of previews.")
    ttl_s: float = Field(default=10.0, gt=0.0, le=3600.0, description="How long a preview and status stay after "
                         "their last refresh (then the camera shows as offline).")


@dataclass(frozen=True)
class PreviewBox:
    box: tuple[float, float, float, float]
    label: str
    named: bool


@dataclass
class _Counts:
    frames: int = 0
    dropped: int = 0
    last_seq: int | None = None
    window_start: float = 0.0
    window_frames: int = 0
    due_at: float = 0.0

    def count(self, seq: int) -> None:
        self.frames += 1
        self.window_frames += 1
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.dropped += seq - self.last_seq - 1
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)


def ascii_label(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


def render(image: np.ndarray, boxes: list[PreviewBox], max_side: int, quality: int) -> bytes:
    """The RGB frame downscaled to ``max_side`` with the boxes and labels drawn, as JPEG bytes."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                  interpolation=cv2.INTER_AREA)
    small = np.ascontiguousarray(small, dtype=np.uint8).copy()
    for item in boxes:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in item.box)
        colour = NAMED_RGB if item.named else UNKNOWN_RGB
        cv2.rectangle(small, (x1, y1), (x2, y2), colour, 2)
        cv2.putText(small, ascii_label(item.label), (x1, max(12, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1,
                    cv2.LINE_AA)
    return simplejpeg.encode_jpeg(small, quality=quality, colorspace="RGB")


class PreviewPublisher:
    """Counts every frame of each camera and, every ``interval_s``, writes its preview and status."""

    def __init__(self, cfg: PreviewConfig, live: LiveTracks, worker: str | None,
                 failed: Callable[[str, Exception], None]) -> None:
        self.cfg = cfg
        self.live = live
        self.worker = worker
        self.failed = failed
        self._counts: dict[str, _Counts] = {}

    def frame(self, camera: str, seq: int, image: np.ndarray, boxes: Callable[[], list[PreviewBox]],
              now: float | None = None) -> bool:
        """Count a frame; when the camera's preview is due, render it (``boxes`` is called only then) and write
        it. Whether one was written."""
        if self.cfg.interval_s == 0:
            return False
        now = time.monotonic() if now is None else now
        counts = self._counts.setdefault(camera, _Counts(window_start=now, due_at=now))
        counts.count(seq)
        if now < counts.due_at:
            return False
        elapsed = now - counts.window_start
        fps = counts.window_frames / elapsed if elapsed > 0 else 0.0
        counts.window_start, counts.window_frames, counts.due_at = now, 0, now + self.cfg.interval_s
        drawn = boxes()
        height, width = image.shape[:2]
        status = CameraStatus(camera, self.worker, round(fps, 2), counts.frames, counts.dropped, len(drawn), width,
                              height, time.time())
        try:
            self.live.put_camera(status, render(image, drawn, self.cfg.max_side, self.cfg.jpeg_quality),
                                 self.cfg.ttl_s)
        except (ArgusError, OSError) as exc:
            self.failed("put_camera", exc)
            return False
        return True

    def forget(self, camera: str) -> None:
        self._counts.pop(camera, None)
