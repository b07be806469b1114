"""The detector interface: RGB images in, ``Detections`` (boxes, 5 landmarks, scores) out."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from shared.types import Detections


@runtime_checkable
class Detector(Protocol):
    name: str
    provider: str

    def detect(self, images: Sequence[np.ndarray], max_side: int | None = None) -> list[Detections]:
        """One ``Detections`` per (H, W, 3) uint8 RGB image, in that image's pixel coordinates; ``max_side``: the
        longer side images are resized to (default: the configured one)."""
        ...
