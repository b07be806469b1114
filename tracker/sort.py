"""SORT (Bewley et al., 2016): one IoU association stage over every track; a simpler baseline to ByteTrack."""

from __future__ import annotations

import numpy as np

from shared.types import Detections
from tracker.association import assign, frame_iou
from tracker.config import SortConfig
from tracker.kalman_tracker import KalmanTracker


class SortTracker(KalmanTracker):
    def __init__(self, cfg: SortConfig) -> None:
        self.cfg = cfg
        self.lost_buffer_s = cfg.lost_buffer_s
        self.min_hits = cfg.min_hits
        super().__init__()

    def _associate(self, predicted: np.ndarray, detections: Detections) -> tuple[np.ndarray, np.ndarray]:
        usable = np.flatnonzero(detections.scores >= self.cfg.min_score)
        found = assign(frame_iou(predicted, detections.boxes), np.arange(len(predicted)), usable, self.cfg.match_iou)
        return found.pairs, found.unmatched_detections
