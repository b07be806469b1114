"""Broker settings: its endpoints and flow control."""

from __future__ import annotations

from pydantic import Field

from shared.schema import Section
from shared.zmq_defaults import (
    DEFAULT_BACKEND,
    DEFAULT_EVENTS_IN,
    DEFAULT_EVENTS_OUT,
    DEFAULT_FRONTEND,
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
    metrics_port: int = Field(default=9100, ge=0, le=65535, description="Prometheus port; 0 = any free port.")
