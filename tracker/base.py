"""The tracker contract: detections of one frame in, tracks out. Every backend implements ``Tracker``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol, runtime_checkable

import numpy as np

from shared.types import Detections


@dataclass(frozen=True)
class FrameMeta:
    """What a tracker knows about a frame. ``ts``: capture time in seconds (frames may be dropped: use it, not
    frame counts, for motion and for how long a track may stay lost)."""

    camera: str
    seq: int
    ts: float
    width: int
    height: int


class TrackState(str, Enum):
    TENTATIVE = "tentative"  # seen, not yet confirmed (not reported)
    TRACKED = "tracked"      # confirmed and matched in this frame
    LOST = "lost"            # not matched lately, kept for re-association (not reported)
    ENDED = "ended"          # lost longer than the buffer: reported once, then forgotten


@dataclass(frozen=True)
class Track:
    """track_id: unique per tracker instance from 1; box: (4,) float32 x1y1x2y2, the matched detection's box (the
    predicted box when ``predict`` reports it); det_index: index of that detection in this frame's ``Detections``
    (None for an ENDED track and for every track ``predict`` reports)."""

    track_id: int
    box: np.ndarray
    score: float
    state: TrackState
    det_index: int | None
    hits: int
    age: int
    started_ts: float
    last_seen_ts: float


@runtime_checkable
class Tracker(Protocol):
    def update(self, detections: Detections, meta: FrameMeta) -> list[Track]:
        """Associate this frame's detections. Returns the confirmed tracks matched in this frame (TRACKED) and,
        exactly once each, the tracks that ended in this update (ENDED)."""
        ...

    def predict(self, meta: FrameMeta) -> list[Track]:
        """A frame the detector skipped: move every track by its motion model to ``meta.ts`` and report the
        confirmed tracks matched at their last update (TRACKED, predicted box, det_index None). Nothing is
        confirmed, lost or ended here: that waits for the next ``update``."""
        ...

    def reset(self) -> None:
        """Forget every track; ids start again from 1."""
        ...
