"""SORT (Bewley et al., 2016): one IoU association stage over every track; a simpler baseline to ByteTrack."""

from __future__ import annotations

import numpy as np

from shared.types import Detections
from tracker.association import match_by_iou
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
        found = match_by_iou(predicted, detections.boxes[usable], self.cfg.match_iou)
        pairs = np.stack([found.pairs[:, 0], usable[found.pairs[:, 1]]], axis=1) if len(found.pairs) else \
            np.zeros((0, 2), int)
        return pairs, usable[found.unmatched_detections]
