"""The composition root of ArgusNet's configuration: one YAML file plus ``ARGUSNET__SECTION__FIELD`` environment
overrides, validated against every component's own sections.

Every model forbids unknown keys, every field has a description and bounds, and a bad value raises
``ConfigError`` naming the field path and the value. The sections live beside their components; this module only
gathers them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from broker.config import BrokerConfig
from camera_node.config import CameraConfig
from dashboard.config import DashboardConfig
from gpu_worker.config import TrackingConfig, WorkerConfig
from gpu_worker.detect.config import DetectorConfig, RetinaFaceConfig
from gpu_worker.embed.config import DlibEmbedderConfig, EmbedderConfig
from gpu_worker.quality import QualityConfig
from gpu_worker.runtime import RuntimeConfig
from identity.decision import RecognitionConfig
from shared.errors import ConfigError, InputError
from shared.images import ImageLimits
from shared.keys import SecurityConfig
from shared.protocol import ProtocolConfig
from shared.schema import Section, format_validation_error, read_yaml_mapping
from store.config import (
    GalleryConfig,
    LocalStoreConfig,
    RetentionConfig,
    StoreConfig,
    VisitorConfig,
)

ENV_PREFIX = "ARGUSNET__"

class UpConfig(Section):
    workers: int = Field(default=1, ge=1, le=64, description="Worker processes `argusnet up` starts.")
    cameras: list[CameraConfig] = Field(default_factory=lambda: [CameraConfig(id="demo", source="demo")],
                                        description="Cameras `argusnet up` starts; default: the built-in demo camera.")
    gallery: Path | None = Field(default=None, description="Store directory of a local store (the same as "
                                 "store.path, which wins when both are set); default: the user data directory.")
    dashboard: bool = Field(default=True, description="Start the web dashboard (on dashboard.listen) too.")

    @field_validator("cameras")
    @classmethod
    def _unique_camera_ids(cls, cameras: list[CameraConfig]) -> list[CameraConfig]:
        """Two cameras with one id would share a tracker, a crop folder and a broker routing id."""
        first: dict[str, int] = {}
        for index, camera in enumerate(cameras):
            if camera.id in first:
                raise PydanticCustomError(
                    "duplicate_camera_id", "up.cameras[{index}].id '{id}' is already the id of up.cameras[{first}]; "
                    "camera ids must be unique", {"index": index, "id": camera.id, "first": first[camera.id]})
            first[camera.id] = index
        return cameras

class ArgusConfig(Section):
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="ONNX Runtime settings.")
    detector: DetectorConfig = Field(default_factory=RetinaFaceConfig, description="Face detector backend.")
    embedder: EmbedderConfig = Field(default_factory=DlibEmbedderConfig, description="Face embedder backend.")
    store: StoreConfig = Field(default_factory=LocalStoreConfig, description="Where the gallery, visitors, crops, "
                               "events and live tracks are kept (type: local or redis).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="How long each kind of data is "
                                       "kept; enforced by one retention job.")
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
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig, description="The web dashboard.")

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
        loaded = read_yaml_mapping(p, "configuration file")
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


def parse_overrides(pairs: Sequence[str], base: Mapping[str, Any] | None = None, flag: str = "--set") -> dict[str, Any]:
    """``SECTION.KEY=VALUE`` pairs (values read as YAML) as a nested mapping over ``base``, validated as the site
    configuration would be (ConfigError naming the field); InputError for a pair that is not of that form."""
    out: dict[str, Any] = _merge({}, base or {})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise InputError(f"{flag} {pair!r}: give SECTION.KEY=VALUE")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = child = dict(child) if isinstance(child, Mapping) else {}
            node = child
        try:
            node[leaf] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"{flag} {pair!r}: {exc}") from exc
    load_config(environ={}, overrides=out)
    return out
