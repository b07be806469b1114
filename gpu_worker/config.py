"""Worker settings (batching, tracking) and the settings the worker's parts read from the composition root.

``EngineSettings`` and ``WorkerSettings`` name the sections the engine and the frame processors read; the
composition root (`argusnet.config.ArgusConfig`) has them all, and the worker never imports it.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field

from gpu_worker.detect.config import RetinaFaceConfig
from gpu_worker.distant_config import DistantFacesConfig
from gpu_worker.embed.config import DlibEmbedderConfig, OnnxEmbedderConfig
from gpu_worker.preview import PreviewConfig
from gpu_worker.quality import QualityConfig
from gpu_worker.runtime import RuntimeConfig
from identity.decision import RecognitionConfig
from identity.voting import VotingConfig
from shared.images import ImageLimits
from shared.protocol import MAX_CAMERAS, MAX_IMAGE_SIDE
from shared.schema import Section
from store.config import GalleryConfig, StoreBufferConfig, VisitorConfig
from tracker.config import ByteTrackConfig, SchedulerConfig, TrackerConfig


class WorkerConfig(Section):
    max_batch: int = Field(default=4, ge=1, le=256, description="Frames detected together in one batch.")
    max_wait_ms: float = Field(default=10.0, ge=0.0, le=5000.0,
                               description="How long a batch waits to fill before it runs anyway.")
    capacity: int = Field(default=12, ge=1, le=1024, description="Frames a worker accepts ahead (its credits). A "
                          "frame's credit comes back only once it is finished (tens of ms), so this caps a worker's "
                          "throughput at about capacity / that time: 4 held a worker near 35 frames/s; 12 leaves "
                          "room for 8 cameras at 10 fps (BENCHMARKS.md, capacity).")
    detect_threads: int = Field(
        default=2, ge=1, le=64,
        description="Threads that run the detector on different batches at once (ONNX Runtime releases the GIL); "
        "tracking, recognition and the store stay on one thread, in each camera's frame order. 2 suits a 2-core "
        "host (BENCHMARKS.md, capacity); with more than one, each detection's ONNX Runtime intra-op threads are "
        "runtime.threads, or when that is 0 the cores divided among these threads.")
    metrics_port: int = Field(default=9200, ge=0, le=65535, description="Prometheus port; 0 = any free port.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, description="Address the metrics are served on "
                              "(0.0.0.0 in a container, for a Prometheus on another host).")
    max_frame_pixels: int = Field(
        default=4096 * 2160, ge=1, le=MAX_IMAGE_SIDE * MAX_IMAGE_SIDE,
        description="Frames whose JPEG header declares more pixels than this are dropped before decoding "
        "(frames_dropped reason too_large): the default is the most a 4K camera sends (4096x2160); a frame of "
        "16384x16384 would decode to 805 MB. A frame whose JPEG header differs from its declared width and height "
        "is dropped too (reason size_mismatch).")
    capture_window_s: float = Field(
        default=30.0, ge=1.0, le=86_400.0,
        description="A frame's capture_ts further than this before or after the time the worker received it (a "
        "camera clock far off, or a forged time) is clamped to that bound and counted "
        "(argusnet_capture_ts_clamped_total): one frame dated a day ahead cannot make a camera's frames look stale.")
    max_cameras: int = Field(
        default=256, ge=1, le=MAX_CAMERAS,
        description="Cameras this worker keeps state for at once; frames of further cameras are refused and counted "
        "(argusnet_cameras_refused_total) until a camera is forgotten (camera_forget_s).")
    camera_forget_s: float = Field(
        default=300.0, ge=1.0, le=86_400.0,
        description="A camera that sent this worker no frame for this long has its per-camera state and metric "
        "series removed (a flood of new camera ids cannot grow the worker's memory without bound).")
    store_buffer: StoreBufferConfig = Field(default_factory=StoreBufferConfig, description="Writes kept per kind "
                                            "while the store is unavailable (then written in order).")

class TrackingConfig(Section):
    processor: Literal["tracked", "per_frame"] = Field(
        default="tracked", description="tracked: recognise once per track (default); per_frame: embed every face of "
        "every frame, as the prototype did (for comparison).")
    tracker: TrackerConfig = Field(default_factory=ByteTrackConfig, description="Tracker backend (type: bytetrack "
                                   "or sort).")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig, description="When tracks are embedded.")
    voting: VotingConfig = Field(default_factory=VotingConfig, description="How a track's name is decided.")
    visitor_after: int = Field(default=3, ge=1, le=100,
                               description="A track still unknown after this many embeddings becomes a visitor.")
    camera_idle_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                                 description="A camera silent this long on this worker has its tracks ended.")
    detect_fps: float = Field(
        default=10.0, ge=0.0, le=1000.0,
        description="How often the detector must look at each camera: it runs on as few of a camera's frames as keep "
        "the time between two detected frames at most 1/detect_fps seconds; on the frames between, tracks move by "
        "their Kalman prediction and nothing is recognised. 0 = detect every frame. The default 10 detects every "
        "frame of cameras below 20 fps, every other frame at 20-29 fps and every third at 30 fps: it halves a "
        "worker's detection work on 25 fps cameras at a small cost in box accuracy (BENCHMARKS.md). Raise it for "
        "fast motion; lower it (as Frigate's detect fps) to serve more cameras per worker.")
    distant: DistantFacesConfig = Field(default_factory=DistantFacesConfig, description="How faces too small for "
                                        "detector.max_side are found in camera streams (gpu_worker/distant.py).")
    preview: PreviewConfig = Field(default_factory=PreviewConfig, description="Each camera's annotated preview "
                                   "and status, written to the store for the dashboard.")


class EngineSettings(Protocol):
    """What the recognition engine reads."""

    @property
    def runtime(self) -> RuntimeConfig: ...

    @property
    def detector(self) -> RetinaFaceConfig: ...

    @property
    def embedder(self) -> DlibEmbedderConfig | OnnxEmbedderConfig: ...

    @property
    def gallery(self) -> GalleryConfig: ...

    @property
    def recognition(self) -> RecognitionConfig: ...

    @property
    def quality(self) -> QualityConfig: ...

    @property
    def images(self) -> ImageLimits: ...


class WorkerSettings(EngineSettings, Protocol):
    """What the frame processors read on top of the engine's sections."""

    @property
    def tracking(self) -> TrackingConfig: ...

    @property
    def visitors(self) -> VisitorConfig: ...
