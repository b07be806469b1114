"""Any tracker over frames whose size changes mid-stream: a camera node on a slow link lowers its resolution (and
raises it again) without telling anyone, and a face at (600, 300) in a 1280x720 frame is at (480, 240) in the next
1024x576 one, where an IoU tracker would end its track and start another.

``RescaledTracker`` keeps the wrapped tracker in the coordinates of the first frame size it saw (the reference):
each frame's detections are scaled into the reference before ``update`` and the tracks' boxes scaled back into the
frame's own pixels, so a track keeps matching, and keeps its id and name, across a size change. Frames of the
reference size pass through untouched."""

from __future__ import annotations

import dataclasses

import numpy as np

from shared.types import Detections
from tracker.base import FrameMeta, Track, Tracker


class RescaledTracker:
    def __init__(self, inner: Tracker) -> None:
        self.inner = inner
        self._reference: tuple[int, int] | None = None

    def _factors(self, meta: FrameMeta) -> np.ndarray | None:
        """(sx, sy) from this frame to the reference (None when the frame is the reference size)."""
        if meta.width <= 0 or meta.height <= 0:
            raise ValueError(f"frame size must be positive, got {meta.width}x{meta.height}")
        if self._reference is None:
            self._reference = (meta.width, meta.height)
        width, height = self._reference
        if (meta.width, meta.height) == (width, height):
            return None
        return np.array([width / meta.width, height / meta.height], np.float32)

    def _reference_meta(self, meta: FrameMeta) -> FrameMeta:
        width, height = self._reference or (meta.width, meta.height)
        return dataclasses.replace(meta, width=width, height=height)

    @staticmethod
    def _back(tracks: list[Track], factors: np.ndarray) -> list[Track]:
        per_box = np.tile(factors, 2)
        return [dataclasses.replace(t, box=(np.asarray(t.box, np.float32) / per_box).astype(np.float32))
                for t in tracks]

    def update(self, detections: Detections, meta: FrameMeta) -> list[Track]:
        factors = self._factors(meta)
        if factors is None:
            return self.inner.update(detections, meta)
        scaled = Detections((detections.boxes * np.tile(factors, 2)).astype(np.float32), detections.scores,
                            (detections.landmarks * factors).astype(np.float32))
        return self._back(self.inner.update(scaled, self._reference_meta(meta)), factors)

    def predict(self, meta: FrameMeta) -> list[Track]:
        factors = self._factors(meta)
        if factors is None:
            return self.inner.predict(meta)
        return self._back(self.inner.predict(self._reference_meta(meta)), factors)

    def reset(self) -> None:
        """Forget every track (and the reference size: the next frame's is the new one)."""
        self.inner.reset()
        self._reference = None
