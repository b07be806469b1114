"""IoU association with the Hungarian algorithm (scipy's ``linear_sum_assignment``), gated by a minimum IoU.

Backends compute one IoU matrix per frame (every predicted track against every detection) and run each
association stage on a slice of it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from shared.types import iou_matrix


@dataclass(frozen=True)
class Matches:
    """pairs (K, 2) of (track, detection) indices, i.e. rows and columns of the frame's IoU matrix; the track and
    detection indices left over."""

    pairs: np.ndarray
    unmatched_tracks: np.ndarray
    unmatched_detections: np.ndarray


def frame_iou(track_boxes: np.ndarray, det_boxes: np.ndarray) -> np.ndarray:
    """(N, M) IoU of predicted track boxes and detection boxes (empty matrices allowed)."""
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return np.zeros((len(track_boxes), len(det_boxes)), np.float32)
    return iou_matrix(np.asarray(track_boxes, np.float32), np.asarray(det_boxes, np.float32))


def assign(iou: np.ndarray, tracks: np.ndarray, detections: np.ndarray, min_iou: float) -> Matches:
    """Match ``tracks`` (row indices of ``iou``) to ``detections`` (column indices) one-to-one, maximising total
    IoU; pairs below ``min_iou`` are not matches. Returned indices are rows and columns of ``iou``."""
    tracks, detections = np.asarray(tracks, np.intp), np.asarray(detections, np.intp)
    if len(tracks) == 0 or len(detections) == 0:
        return Matches(np.zeros((0, 2), np.intp), tracks, detections)
    sub = iou[np.ix_(tracks, detections)]
    rows, cols = linear_sum_assignment(sub, maximize=True)
    good = sub[rows, cols] >= min_iou
    rows, cols = rows[good], cols[good]
    free_tracks = np.ones(len(tracks), bool)
    free_tracks[rows] = False
    free_dets = np.ones(len(detections), bool)
    free_dets[cols] = False
    pairs = np.stack([tracks[rows], detections[cols]], axis=1)
    return Matches(pairs, tracks[free_tracks], detections[free_dets])
