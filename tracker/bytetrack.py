"""ByteTrack (Zhang et al., 2022) for faces: high-score detections first, then low-score ones keep tracks alive
through occlusion and blur instead of being thrown away."""

from __future__ import annotations

import numpy as np

from shared.types import Detections
from tracker.association import assign, frame_iou
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
        tentative = np.array([t.state is TrackState.TENTATIVE for t in self._tracks], bool)
        tracked = np.array([t.state is TrackState.TRACKED for t in self._tracks], bool)
        iou = frame_iou(predicted, detections.boxes)

        first = assign(iou, np.flatnonzero(~tentative), high, self.cfg.match_iou)
        left_tracked = first.unmatched_tracks[tracked[first.unmatched_tracks]]
        second = assign(iou, left_tracked, low, self.cfg.second_match_iou)
        third = assign(iou, np.flatnonzero(tentative), first.unmatched_detections, self.cfg.match_iou)
        rest = third.unmatched_detections
        starters = rest[scores[rest] >= self.cfg.new_track_threshold]
        return np.concatenate([first.pairs, second.pairs, third.pairs]), starters
