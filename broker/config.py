"""Broker settings: its endpoints and flow control."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.schema import Section
from shared.zmq_defaults import (
    DEFAULT_BACKEND,
    DEFAULT_EVENTS_IN,
    DEFAULT_EVENTS_OUT,
    DEFAULT_FRONTEND,
    parse_endpoints,
)


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
    camera_brokers: list[str] = Field(
        default_factory=list, description="Broker endpoints a camera node connects to, in failover order (a camera "
        "whose broker is silent for 3 heartbeats moves to the next); empty: [frontend].")
    worker_backends: list[str] = Field(
        default_factory=list, description="Broker endpoints a worker serves, all at once (one connection, heartbeats "
        "and credits per broker); empty: [backend].")
    worker_events_in: list[str] = Field(
        default_factory=list, description="Broker endpoints a worker publishes its events to, every one of them; "
        "empty: [events_in].")
    allow_plaintext: bool = Field(default=False, description="Let a broker without security.curve bind an address "
                                  "other machines reach (not 127.0.0.1 / localhost / ipc://); it refuses to start "
                                  "otherwise: frames are faces and events carry names.")
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="Prometheus port; 0 = any free port.")
    metrics_host: str = Field(default="127.0.0.1", min_length=1, description="Address the metrics are served on "
                              "(0.0.0.0 in a container, for a Prometheus on another host).")

    @field_validator("camera_brokers", "worker_backends", "worker_events_in")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        return list(parse_endpoints(value)) if value else value

    def camera_endpoints(self) -> tuple[str, ...]:
        """Where a camera node connects, in failover order."""
        return tuple(self.camera_brokers) or (self.frontend,)

    def backend_endpoints(self) -> tuple[str, ...]:
        """The brokers a worker serves."""
        return tuple(self.worker_backends) or (self.backend,)

    def events_in_endpoints(self) -> tuple[str, ...]:
        """Where a worker publishes its events."""
        return tuple(self.worker_events_in) or (self.events_in,)
