"""Face detectors, chosen by the ``type`` field of the detector config."""

from __future__ import annotations

from gpu_worker.detect.base import Detector
from gpu_worker.detect.config import RetinaFaceConfig
from gpu_worker.runtime import RuntimeConfig


def build_detector(detector: RetinaFaceConfig, runtime: RuntimeConfig) -> Detector:
    """The detector backend named by ``detector.type``."""
    if detector.type == "retinaface":
        from gpu_worker.detect.retinaface import RetinaFaceDetector

        return RetinaFaceDetector(detector, runtime)
    raise ValueError(f"unknown detector type {detector.type!r}")
