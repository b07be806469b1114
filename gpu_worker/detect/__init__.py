"""Face detectors, chosen by the ``type`` field of the detector config."""

from __future__ import annotations

from gpu_worker.detect.base import Detector
from shared.config import ArgusConfig


def build_detector(cfg: ArgusConfig) -> Detector:
    """The detector backend named by ``cfg.detector.type``."""
    if cfg.detector.type == "retinaface":
        from gpu_worker.detect.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(cfg.detector, cfg.runtime)
    raise ValueError(f"unknown detector type {cfg.detector.type!r}")
