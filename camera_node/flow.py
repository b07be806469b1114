"""Flow control on the node: with no credit from the broker, send less rather than queue more.

Starved (a frame is ready and no credit is held): first lower the frame rate step by step to ``min_fps``, then
the JPEG quality to ``min_jpeg_quality``. Plenty (credits held and nothing waiting): recover, quality first,
then frame rate. Steps are at most one per ``STEP_S`` so a short burst does not swing the settings."""

from __future__ import annotations

from camera_node.config import CameraConfig

STEP_S = 0.5
FPS_DOWN, FPS_UP = 0.8, 1.1
QUALITY_STEP = 5


class FlowController:
    def __init__(self, cfg: CameraConfig) -> None:
        self.cfg = cfg
        self.fps = cfg.fps
        self.quality = cfg.jpeg_quality
        self._last_step = float("-inf")

    def _may_step(self, now: float) -> bool:
        if now - self._last_step < STEP_S:
            return False
        self._last_step = now
        return True

    def starved(self, now: float) -> None:
        if not self._may_step(now):
            return
        if self.fps > self.cfg.min_fps:
            self.fps = max(self.cfg.min_fps, self.fps * FPS_DOWN)
        elif self.quality > self.cfg.min_jpeg_quality:
            self.quality = max(self.cfg.min_jpeg_quality, self.quality - QUALITY_STEP)

    def plenty(self, now: float) -> None:
        if not self._may_step(now):
            return
        if self.quality < self.cfg.jpeg_quality:
            self.quality = min(self.cfg.jpeg_quality, self.quality + QUALITY_STEP)
        elif self.fps < self.cfg.fps:
            self.fps = min(self.cfg.fps, self.fps * FPS_UP)
