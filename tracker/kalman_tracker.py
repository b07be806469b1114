"""What every Kalman + IoU tracker backend shares: track bookkeeping, prediction, confirmation, loss and ending.
A backend only decides which predicted track goes with which detection (``_associate``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.types import Detections
from tracker.base import FrameMeta, Track, TrackState
from tracker.kalman import KalmanBoxFilter


@dataclass
class _Live:
    """A track's mutable bookkeeping (its motion state lives in the filter, at the same index)."""

    track_id: int
    state: TrackState
    hits: int
    age: int
    started_ts: float
    last_seen_ts: float
    predicted_ts: float
    score: float


class KalmanTracker:
    """Base of the backends: ``update`` predicts every track to ``meta.ts``, asks ``_associate`` for
    (track index, detection index) pairs, updates the matched, ages the rest and starts new tracks."""

    lost_buffer_s: float
    min_hits: int

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._tracks: list[_Live] = []
        self._filter = KalmanBoxFilter()
        self._next_id = 1
        self._frames = 0

    def _associate(self, predicted: np.ndarray, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        """Backend: (pairs (K, 2) of track index, detection index) and the detection indices that may start
        new tracks."""
        raise NotImplementedError

    def update(self, detections: Detections, meta: FrameMeta) -> list[Track]:
        if not isinstance(detections, Detections):
            raise ValueError(f"detections must be shared.types.Detections, got {type(detections).__name__}")
        self._frames += 1
        self._advance(meta)
        pairs, starters = self._associate(self._filter.boxes(), detections)
        out = self._apply_matches(pairs, detections, meta)
        out += self._age_unmatched(set(pairs[:, 0].tolist()), meta)
        return out + self._start(starters, detections, meta)

    def predict(self, meta: FrameMeta) -> list[Track]:
        self._advance(meta)
        boxes = self._filter.boxes()
        return [self._public(t, boxes[i], None) for i, t in enumerate(self._tracks) if t.state is TrackState.TRACKED]

    def _advance(self, meta: FrameMeta) -> None:
        """Predict every track's box at ``meta.ts`` (frames may come late or be dropped: time, not frames)."""
        dt = np.array([max(0.0, meta.ts - t.predicted_ts) for t in self._tracks])
        self._filter.predict(dt)
        for t in self._tracks:
            t.predicted_ts = max(t.predicted_ts, meta.ts)
            t.age += 1

    def _apply_matches(self, pairs: np.ndarray, detections: Detections, meta: FrameMeta) -> list[Track]:
        self._filter.update(pairs[:, 0], detections.boxes[pairs[:, 1]])
        out = []
        scores = detections.scores.tolist()
        for ti, di in pairs.tolist():
            t = self._tracks[ti]
            t.hits += 1
            t.last_seen_ts = meta.ts
            t.score = scores[di]
            if t.state is TrackState.LOST or (t.state is TrackState.TENTATIVE and t.hits >= self.min_hits):
                t.state = TrackState.TRACKED
            if t.state is TrackState.TRACKED:
                out.append(self._public(t, detections.boxes[di], di))
        return out

    def _age_unmatched(self, matched: set[int], meta: FrameMeta) -> list[Track]:
        """Unmatched: tentative tracks are dropped, confirmed ones become lost, then end after the buffer."""
        gone, keep = [], []
        for i, t in enumerate(self._tracks):
            if i not in matched:
                if t.state is TrackState.TENTATIVE:
                    continue
                t.state = TrackState.LOST
                if meta.ts - t.last_seen_ts > self.lost_buffer_s:
                    t.state = TrackState.ENDED
                    gone.append((i, t))
                    continue
            keep.append(i)
        boxes = self._filter.boxes() if gone else None  # an ended track's box is its last prediction
        ended = [self._public(t, boxes[i], None) for i, t in gone]
        self._tracks = [self._tracks[i] for i in keep]
        self._filter.remove(np.asarray(keep, int))
        return ended

    def _start(self, starters: np.ndarray, detections: Detections, meta: FrameMeta) -> list[Track]:
        """New tracks from ``starters``; those confirmed at once (first frame, or min_hits 1) are reported now."""
        if len(starters) == 0:
            return []
        self._filter.add(detections.boxes[starters])
        confirmed_at_once = self.min_hits <= 1 or self._frames == 1
        out = []
        for di in starters:
            state = TrackState.TRACKED if confirmed_at_once else TrackState.TENTATIVE
            t = _Live(self._next_id, state, 1, 1, meta.ts, meta.ts, meta.ts, float(detections.scores[di]))
            self._tracks.append(t)
            self._next_id += 1
            if confirmed_at_once:
                out.append(self._public(t, detections.boxes[di], int(di)))
        return out

    @staticmethod
    def _public(t: _Live, box: np.ndarray, det_index: int | None) -> Track:
        state = TrackState.ENDED if t.state is TrackState.ENDED else TrackState.TRACKED
        return Track(t.track_id, np.asarray(box, np.float32).copy(), t.score, state, det_index, t.hits, t.age,
                     t.started_ts, t.last_seen_ts)
