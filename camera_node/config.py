"""A camera node's settings: its source, rates, JPEG quality and queue (CameraConfig, also an entry of the site
configuration's up.cameras), and a node's own file (NodeConfig: the camera plus its brokers, keys and metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from pydantic import Field, FilePath, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from shared.errors import ConfigError
from shared.ids import ID_PATTERN, ID_RULE
from shared.keys import SecurityConfig
from shared.protocol import ProtocolConfig
from shared.schema import Section, format_validation_error, read_yaml_mapping
from shared.zmq_defaults import ENDPOINT_SEPARATOR, MAX_ENDPOINTS, off_loopback, parse_endpoints


class CameraConfig(Section):
    id: str = Field(pattern=f"^{ID_PATTERN}$", description=f"Camera id: {ID_RULE}.")
    source: str = Field(min_length=1, description="`demo`, a video file path, an RTSP/HTTP URL or a USB index.")
    loop: bool = Field(default=True, description="Restart a video file at its end.")
    pace: bool = Field(default=True, description="Send a video file at its own fps rather than as fast as possible.")
    fps: float = Field(default=10.0, gt=0.0, le=120.0, description="Highest frame rate sent.")
    min_fps: float = Field(default=1.0, gt=0.0, le=120.0, description="Lowest rate flow control may slow down to.")
    max_side: int = Field(default=1280, ge=64, le=8192, description="Frames are downscaled to this longer side.")
    min_max_side: int = Field(default=640, ge=64, le=8192, description="Smallest longer side flow control may "
                              "downscale to on a slow link (after the JPEG quality is at its lowest).")
    jpeg_quality: int = Field(default=85, ge=10, le=100, description="JPEG quality at full credit.")
    min_jpeg_quality: int = Field(default=50, ge=10, le=100, description="Lowest JPEG quality on a slow link.")
    queue: int = Field(default=2, ge=1, le=64, description="Capture queue length; the oldest frame is dropped.")
    motion_gate: bool = Field(default=False, description="Skip frames that barely differ from the last sent one.")
    motion_threshold: float = Field(default=2.0, ge=0.0, le=255.0,
                                    description="Mean absolute grey difference below which a frame is unchanged.")
    keepalive_s: float = Field(default=5.0, gt=0.0, le=3600.0,
                               description="With the motion gate on, send a frame at least this often.")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port; 0 = any free port.")


# --- A camera node's own file (`argusnet camera --config camera.yaml`) -------------------------------------------

NODE_METRICS_PORT = 9300  # broker 9100, worker 9200, camera node 9300
MAX_HOST_LEN = 253  # a DNS name


class NodeCurveConfig(Section):
    secret_key: FilePath = Field(description="This camera's secret key file, NAME.key_secret from `argusnet keys "
                                 "gen --name NAME` (readable by the camera's user only).")
    broker_public_key: FilePath = Field(description="The broker's public key file (its NAME.key); every broker of "
                                        "`brokers` must use this key pair.")


class NodeConfig(CameraConfig):
    """Everything a camera node needs, in one small file: the camera (every CameraConfig field), where its brokers
    are, its CurveZMQ keys and where it serves its metrics. It is not the site configuration (`argusnet --config`,
    ArgusConfig): a node needs none of the worker, store or dashboard sections."""

    brokers: list[str] = Field(min_length=1, max_length=MAX_ENDPOINTS,
                               description="Broker endpoints (tcp://HOST:5555) in failover order: the node moves to "
                               "the next one when its broker is silent for 3 heartbeats.")
    plaintext: bool = Field(default=False, description="Allow sending frames unencrypted to a broker on another "
                            "machine (without `curve`); refused unless set.")
    curve: NodeCurveConfig | None = Field(default=None, description="CurveZMQ keys: encrypt frames and authenticate "
                                          "both ends; required for a broker on another machine unless plaintext.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, max_length=MAX_HOST_LEN,
                              description="Address the Prometheus endpoint listens on (0.0.0.0: every interface, "
                              "for a Prometheus on another machine).")
    metrics_port: int = Field(default=NODE_METRICS_PORT, ge=0, le=65535,
                              description="Prometheus port; 0 = any free port.")
    protocol: ProtocolConfig = Field(default_factory=ProtocolConfig, description="Wire protocol limits.")

    @field_validator("brokers", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        """``brokers: tcp://a:5555,tcp://b:5555`` (one string, as on the command line) is a list too."""
        return value.split(ENDPOINT_SEPARATOR) if isinstance(value, str) else value

    @field_validator("brokers")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return list(parse_endpoints(value))

    @field_validator("curve")
    @classmethod
    def _curve_off_machine(cls, value: NodeCurveConfig | None, info: ValidationInfo) -> NodeCurveConfig | None:
        """Frames are faces: unencrypted only on this machine, or when the file says so."""
        remote = [e for e in info.data.get("brokers", ()) if off_loopback(e)]
        if value is None and remote and not info.data.get("plaintext", True):
            raise PydanticCustomError(
                "curve_required", "required: broker {remote} is on another machine and frames (faces) would cross "
                "the network unencrypted; give curve (secret_key: FILE, broker_public_key: FILE, from `argusnet keys "
                "gen`), or plaintext: true to accept that", {"remote": remote[0]})
        return value

    def camera(self) -> CameraConfig:
        """The camera's own settings, as `camera_node.node.CameraNode` takes them."""
        return CameraConfig.model_validate(self.model_dump(include=set(CameraConfig.model_fields)))

    def security(self) -> SecurityConfig:
        if self.curve is None:
            return SecurityConfig()
        return SecurityConfig(curve=True, camera_secret_key=self.curve.secret_key,
                              broker_public_key=self.curve.broker_public_key)


def load_node_config(path: Path, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """A camera file (YAML), with ``overrides`` (command-line options) on top; ConfigError naming the field."""
    data = read_yaml_mapping(path, "camera file", " (id: ..., source: ..., brokers: [...])")
    data = {**data, **(overrides or {})}
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        source = f"{path} + command line" if overrides else str(path)
        raise ConfigError(format_validation_error(exc, source)) from exc
