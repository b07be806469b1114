"""Common value types: face detections as a struct of arrays, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def check_array(name: str, value: np.ndarray, shape: tuple[int | None, ...], dtype: type | None = None) -> None:
    """Raise ``ValueError`` naming the expected and the actual shape when ``value`` does not fit ``shape``.

    ``None`` in ``shape`` accepts any size on that axis.
    """
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape {_fmt(shape)}, got {type(value).__name__}")
    if value.ndim != len(shape) or any(e is not None and e != a for e, a in zip(shape, value.shape)):
        raise ValueError(f"{name} must have shape {_fmt(shape)}, got {tuple(value.shape)}")
    if dtype is not None and value.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype.name}")


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"


@dataclass(frozen=True)
class Detections:
    """Faces found in one image, in that image's pixel coordinates.

    boxes: (N, 4) float32 x1, y1, x2, y2; scores: (N,) float32; landmarks: (N, 5, 2) float32 in the order
    right eye, left eye (as seen in the image: image-left eye first), nose tip, mouth left, mouth right.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __post_init__(self) -> None:
        check_array("boxes", self.boxes, (None, 4), np.float32)
        n = self.boxes.shape[0]
        check_array("scores", self.scores, (n,), np.float32)
        check_array("landmarks", self.landmarks, (n, 5, 2), np.float32)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: np.ndarray | list[int] | slice) -> "Detections":
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    @property
    def areas(self) -> np.ndarray:
        wh = np.clip(self.boxes[:, 2:] - self.boxes[:, :2], 0, None)
        return wh[:, 0] * wh[:, 1]

    def largest(self) -> "Detections":
        """The single largest face (by box area), or empty."""
        if len(self) == 0:
            return self
        return self.select([int(np.argmax(self.areas))])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1y1x2y2 boxes, as an (N, M) float32 matrix."""
    check_array("a", a, (None, 4))
    check_array("b", b, (None, 4))
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(br - tl, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
