"""Prometheus metric names, label sets and buckets in one place, so every process exports the same names.

Each process builds its metrics on its own ``CollectorRegistry`` (tests run several components in one process)
and serves it with ``serve(registry, port)``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

PREFIX = "argusnet"

MODEL_PROVIDER = f"{PREFIX}_model_provider_info"  # gauge=1, labels: model, provider
PROTOCOL_ERRORS = f"{PREFIX}_protocol_errors_total"  # counter, labels: reason
IMAGES_REFUSED = f"{PREFIX}_images_refused_total"  # counter, labels: reason
STAGE_LATENCY = f"{PREFIX}_stage_latency_seconds"  # histogram, labels: stage
END_TO_END_LATENCY = f"{PREFIX}_end_to_end_latency_seconds"  # histogram: capture -> event published
FRAMES_IN = f"{PREFIX}_frames_in_total"  # counter, labels: camera
FRAMES_OUT = f"{PREFIX}_frames_out_total"  # counter, labels: camera
FRAMES_DROPPED = f"{PREFIX}_frames_dropped_total"  # counter, labels: camera, reason
QUEUE_DEPTH = f"{PREFIX}_queue_depth"  # gauge, labels: queue
WORKERS_ALIVE = f"{PREFIX}_workers_alive"  # gauge
EVENTS = f"{PREFIX}_events_total"  # counter, labels: type
FACES = f"{PREFIX}_faces_total"  # counter: faces detected
EMBEDDINGS = f"{PREFIX}_embeddings_total"  # counter: faces embedded
EVENTS_DROPPED = f"{PREFIX}_events_dropped_total"  # counter, labels: reason (outbox_full)
RETENTION_REMOVED = f"{PREFIX}_retention_removed_total"  # counter, labels: kind (visitors, crops, events, ...)
STORE_ERRORS = f"{PREFIX}_store_errors_total"  # counter, labels: operation

STAGES = ("capture_to_send", "broker", "decode", "detect", "embed", "search", "track", "publish")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger(__name__)


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``registry`` over HTTP on host:port (0 = any free port); returns the port actually bound."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
CAMERA_FRAMES = f"{PREFIX}_camera_frames_total"  # counter, labels: camera, outcome (captured, sent, unchanged, ...)
CAMERA_FPS = f"{PREFIX}_camera_fps"  # gauge, labels: camera: the rate flow control currently allows
CAMERA_JPEG_QUALITY = f"{PREFIX}_camera_jpeg_quality"  # gauge, labels: camera
CAMERA_CREDITS = f"{PREFIX}_camera_credits"  # gauge, labels: camera: broker credits held
