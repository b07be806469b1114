"""ByteTrack (Zhang et al., 2022) for faces: high-score detections first, then low-score ones keep tracks alive
through occlusion and blur instead of being thrown away."""

from __future__ import annotations

import numpy as np

from shared.types import Detections
from tracker.association import match_by_iou
from tracker.base import TrackState
from tracker.config import ByteTrackConfig
from tracker.kalman_tracker import KalmanTracker


class ByteTracker(KalmanTracker):
    """Stage 1: confirmed (tracked + lost) tracks vs high-score detections. Stage 2: still-unmatched tracked tracks
    vs low-score detections (stricter IoU). Stage 3: tentative tracks vs the high-score detections left. New
    tracks from high-score detections nobody took (at least ``new_track_threshold``)."""

    def __init__(self, cfg: ByteTrackConfig) -> None:
        self.cfg = cfg
        self.lost_buffer_s = cfg.lost_buffer_s
        self.min_hits = cfg.min_hits
        super().__init__()

    def _associate(self, predicted: np.ndarray, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        scores = detections.scores
        high = np.flatnonzero(scores >= self.cfg.high_threshold)
        low = np.flatnonzero((scores >= self.cfg.low_threshold) & (scores < self.cfg.high_threshold))
        states = [t.state for t in self._tracks]
        confirmed = np.array([i for i, s in enumerate(states) if s is not TrackState.TENTATIVE], int)
        tentative = np.array([i for i, s in enumerate(states) if s is TrackState.TENTATIVE], int)
        pairs = []

        first = match_by_iou(predicted[confirmed], detections.boxes[high], self.cfg.match_iou)
        pairs += [(confirmed[t], high[d]) for t, d in first.pairs]
        left_tracks = confirmed[first.unmatched_tracks]
        left_tracks = np.array([i for i in left_tracks if states[i] is TrackState.TRACKED], int)
        second = match_by_iou(predicted[left_tracks], detections.boxes[low], self.cfg.second_match_iou)
        pairs += [(left_tracks[t], low[d]) for t, d in second.pairs]
        left_high = high[first.unmatched_detections]
        third = match_by_iou(predicted[tentative], detections.boxes[left_high], self.cfg.match_iou)
        pairs += [(tentative[t], left_high[d]) for t, d in third.pairs]
        rest = left_high[third.unmatched_detections]
        starters = rest[scores[rest] >= self.cfg.new_track_threshold]
        return np.asarray(pairs, int).reshape(-1, 2), starters
