"""IoU association with the Hungarian algorithm (scipy's ``linear_sum_assignment``), gated by a minimum IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from shared.types import iou_matrix


@dataclass(frozen=True)
class Matches:
    """pairs (K, 2) of (track index, detection index); the track and detection indices left over."""

    pairs: np.ndarray
    unmatched_tracks: np.ndarray
    unmatched_detections: np.ndarray


def match_by_iou(track_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float) -> Matches:
    """Maximise total IoU over one-to-one pairs; pairs below ``min_iou`` are not matches."""
    n, m = len(track_boxes), len(det_boxes)
    if n == 0 or m == 0:
        return Matches(np.zeros((0, 2), int), np.arange(n), np.arange(m))
    iou = iou_matrix(np.asarray(track_boxes, np.float32), np.asarray(det_boxes, np.float32))
    rows, cols = linear_sum_assignment(1.0 - iou)
    good = iou[rows, cols] >= min_iou
    pairs = np.stack([rows[good], cols[good]], axis=1)
    return Matches(pairs, np.setdiff1d(np.arange(n), pairs[:, 0]), np.setdiff1d(np.arange(m), pairs[:, 1]))
