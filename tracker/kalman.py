"""Constant-velocity Kalman filter over box centre, aspect ratio and height (the SORT / ByteTrack state), for
many tracks at once. State: (cx, cy, a, h, vcx, vcy, va, vh); measurement: (cx, cy, a, h). Noise scales with the
box height, so small and large faces are tracked alike; time steps come from timestamps (dropped frames)."""

from __future__ import annotations

import numpy as np

POSITION_NOISE = 1.0 / 20   # std of position per unit height (per second for the process noise)
VELOCITY_NOISE = 1.0 / 160
ASPECT_NOISE = 1e-2


def _diag(values: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K, K) diagonal matrices."""
    n, k = values.shape
    out = np.zeros((n, k, k))
    out[:, np.arange(k), np.arange(k)] = values
    return out


def boxes_to_measurements(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) x1y1x2y2 -> (N, 4) cx, cy, aspect (w/h), h."""
    w = boxes[:, 2] - boxes[:, 0]
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 1e-3)
    return np.stack([boxes[:, 0] + w / 2, boxes[:, 1] + h / 2, w / h, h], axis=1)


def measurements_to_boxes(z: np.ndarray) -> np.ndarray:
    w = z[:, 2] * z[:, 3]
    return np.stack([z[:, 0] - w / 2, z[:, 1] - z[:, 3] / 2, z[:, 0] + w / 2, z[:, 1] + z[:, 3] / 2], axis=1)


class KalmanBoxFilter:
    """Means (N, 8) and covariances (N, 8, 8) of N tracks, predicted and updated together."""

    def __init__(self) -> None:
        self.mean = np.zeros((0, 8))
        self.cov = np.zeros((0, 8, 8))
        self._h = np.eye(4, 8)

    def __len__(self) -> int:
        return len(self.mean)

    def add(self, boxes: np.ndarray) -> None:
        z = boxes_to_measurements(np.asarray(boxes, np.float64))
        h = z[:, 3]
        std = np.stack([2 * POSITION_NOISE * h, 2 * POSITION_NOISE * h, np.full_like(h, ASPECT_NOISE),
                        2 * POSITION_NOISE * h, 10 * VELOCITY_NOISE * h, 10 * VELOCITY_NOISE * h,
                        np.full_like(h, 1e-4), 10 * VELOCITY_NOISE * h], axis=1) * 5
        self.mean = np.concatenate([self.mean, np.concatenate([z, np.zeros_like(z)], axis=1)])
        self.cov = np.concatenate([self.cov, _diag(std ** 2)])

    def remove(self, keep: np.ndarray) -> None:
        self.mean, self.cov = self.mean[keep], self.cov[keep]

    def predict(self, dt: np.ndarray) -> None:
        """Advance each track by its own ``dt`` seconds (N,)."""
        if len(self) == 0:
            return
        n = len(self)
        f = np.tile(np.eye(8), (n, 1, 1))
        f[:, np.arange(4), np.arange(4) + 4] = dt[:, None]
        h = self.mean[:, 3]
        step = np.maximum(dt, 1e-3)
        q = np.stack([POSITION_NOISE * h, POSITION_NOISE * h, np.full_like(h, ASPECT_NOISE), POSITION_NOISE * h,
                      VELOCITY_NOISE * h, VELOCITY_NOISE * h, np.full_like(h, 1e-5), VELOCITY_NOISE * h], axis=1)
        self.mean = np.einsum("nij,nj->ni", f, self.mean)
        self.cov = f @ self.cov @ f.transpose(0, 2, 1) + _diag(q ** 2 * step[:, None])

    def update(self, index: np.ndarray, boxes: np.ndarray) -> None:
        """Correct tracks ``index`` with measured ``boxes`` (same order)."""
        if len(index) == 0:
            return
        z = boxes_to_measurements(np.asarray(boxes, np.float64))
        mean, cov = self.mean[index], self.cov[index]
        h = mean[:, 3]
        r = np.stack([POSITION_NOISE * h, POSITION_NOISE * h, np.full_like(h, 10 * ASPECT_NOISE),
                      POSITION_NOISE * h], axis=1) ** 2
        s = cov[:, :4, :4] + _diag(r)
        gain = cov[:, :, :4] @ np.linalg.inv(s)
        innovation = z - mean[:, :4]
        self.mean[index] = mean + np.einsum("nij,nj->ni", gain, innovation)
        self.cov[index] = cov - gain @ cov[:, :4, :]

    def boxes(self) -> np.ndarray:
        return measurements_to_boxes(self.mean[:, :4]).astype(np.float32)
