"""``build_tracker``: the tracker backend a config names (imported eagerly, so the first camera does not pay for
loading scipy)."""

from __future__ import annotations

from tracker.base import Tracker
from tracker.bytetrack import ByteTracker
from tracker.config import ByteTrackConfig, SortConfig
from tracker.rescaled import RescaledTracker
from tracker.sort import SortTracker


def build_backend(cfg: ByteTrackConfig | SortConfig) -> Tracker:
    """The tracker backend named by ``cfg.type``."""
    if isinstance(cfg, ByteTrackConfig):
        return ByteTracker(cfg)
    if isinstance(cfg, SortConfig):
        return SortTracker(cfg)
    raise ValueError(f"unknown tracker config {type(cfg).__name__}")


def build_tracker(cfg: ByteTrackConfig | SortConfig) -> Tracker:
    """The backend ``cfg`` names, following its tracks across changes of the frame size (`tracker.rescaled`)."""
    return RescaledTracker(build_backend(cfg))
