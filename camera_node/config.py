"""A camera node's settings: its source, rates, JPEG quality and queue."""

from __future__ import annotations

from pydantic import Field

from shared.ids import ID_PATTERN, ID_RULE
from shared.schema import Section


class CameraConfig(Section):
    id: str = Field(pattern=f"^{ID_PATTERN}$", description=f"Camera id: {ID_RULE}.")
    source: str = Field(min_length=1, description="`demo`, a video file path, an RTSP/HTTP URL or a USB index.")
    loop: bool = Field(default=True, description="Restart a video file at its end.")
    pace: bool = Field(default=True, description="Send a video file at its own fps rather than as fast as possible.")
    fps: float = Field(default=10.0, gt=0.0, le=120.0, description="Highest frame rate sent.")
    min_fps: float = Field(default=1.0, gt=0.0, le=120.0, description="Lowest rate flow control may slow down to.")
    max_side: int = Field(default=1280, ge=64, le=8192, description="Frames are downscaled to this longer side.")
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="JPEG quality at full credit.")
    min_jpeg_quality: int = Field(default=50, ge=10, le=100, description="Lowest JPEG quality under back-pressure.")
    queue: int = Field(default=2, ge=1, le=64, description="Capture queue length; the oldest frame is dropped.")
    motion_gate: bool = Field(default=False, description="Skip frames that barely differ from the last sent one.")
    motion_threshold: float = Field(default=2.0, ge=0.0, le=255.0,
                                    description="Mean absolute grey difference below which a frame is unchanged.")
    keepalive_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                               description="With the motion gate on, send a frame at least this often.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port; 0 = any free port.")
