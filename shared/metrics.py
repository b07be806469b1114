"""Prometheus metric names, label sets and buckets in one place, so every process exports the same names.

Each process builds its metrics on its own ``CollectorRegistry`` (tests run several components in one process)
and serves it with ``serve(registry, port)``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, start_http_server

from shared.protocol import EVENT_TYPES, REASONS

PREFIX = "argusnet"

MODEL_PROVIDER = f"{PREFIX}_model_provider_info"  # gauge=1, labels: model, provider
PROTOCOL_ERRORS = f"{PREFIX}_protocol_errors_total"  # counter, labels: reason
IMAGES_REFUSED = f"{PREFIX}_images_refused_total"  # counter, labels: reason
STAGE_LATENCY = f"{PREFIX}_stage_latency_seconds"  # histogram, labels: stage
END_TO_END_LATENCY = f"{PREFIX}_end_to_end_latency_seconds"  # histogram: capture -> track_started or
# track_identified published (track_ended is published once the tracker gave the face up: TRACK_LOST_DELAY)
TIME_TO_NAME = f"{PREFIX}_time_to_name_seconds"  # histogram: a track's first frame -> the frame that named it
TRACK_LOST_DELAY = f"{PREFIX}_track_lost_delay_seconds"  # histogram: last capture of a track -> track_ended published
FRAMES_IN = f"{PREFIX}_frames_in_total"  # counter, labels: camera
FRAMES_OUT = f"{PREFIX}_frames_out_total"  # counter, labels: camera
FRAMES_DROPPED = f"{PREFIX}_frames_dropped_total"  # counter, labels: camera, reason
CAPTURE_TS_CLAMPED = f"{PREFIX}_capture_ts_clamped_total"  # counter, labels: direction (CLAMP_DIRECTIONS)
CAMERAS_REFUSED = f"{PREFIX}_cameras_refused_total"  # counter: frames of cameras over worker.max_cameras
QUEUE_DEPTH = f"{PREFIX}_queue_depth"  # gauge, labels: queue
WORKERS_ALIVE = f"{PREFIX}_workers_alive"  # gauge
EVENTS = f"{PREFIX}_events_total"  # counter, labels: type
FACES = f"{PREFIX}_faces_total"  # counter: faces detected
EMBEDDINGS = f"{PREFIX}_embeddings_total"  # counter: faces embedded
EVENTS_DROPPED = f"{PREFIX}_events_dropped_total"  # counter, labels: reason (outbox_full)
RETENTION_REMOVED = f"{PREFIX}_retention_removed_total"  # counter, labels: kind (visitors, crops, events, ...)
STORE_ERRORS = f"{PREFIX}_store_errors_total"  # counter, labels: operation (STORE_OPERATIONS)
STORE_LATENCY = f"{PREFIX}_store_latency_seconds"  # histogram, labels: operation (STORE_OPERATIONS)
STORE_BUFFER_DEPTH = f"{PREFIX}_store_buffer_depth"  # gauge, labels: kind (STORE_BUFFER_KINDS): writes waiting
STORE_DROPPED = f"{PREFIX}_store_dropped_total"  # counter, labels: kind: buffered writes given up (never written)
STORE_NAMES_REFUSED = f"{PREFIX}_store_names_refused_total"  # counter: enrolled names that break the name rule
STORE_ERASED_WRITES = f"{PREFIX}_store_erased_writes_total"  # counter, labels: kind: buffered writes not made, naming
# a person forgotten after they were made (store.erasures)
STORE_REPLICA_LAG = f"{PREFIX}_store_replica_lag_seconds"  # gauge: time since the gallery replicas last synced

WORKER_CAMERAS = f"{PREFIX}_worker_cameras"  # gauge, labels: worker (broker)
WORKER_BUSY = f"{PREFIX}_worker_busy_ratio"  # gauge: share of the last load window a worker's processing was busy
WORKER_CREDITS = f"{PREFIX}_worker_credits"  # gauge, labels: worker (broker)
BROKER_QUEUE_DEPTH = f"{PREFIX}_broker_queue_depth"  # gauge, labels: camera
AUTH_REFUSED = f"{PREFIX}_auth_refused_total"  # counter, labels: reason (AUTH_REFUSED_REASONS)
UNCREDITED_FRAMES = f"{PREFIX}_uncredited_frames_total"  # counter, labels: camera

# The label values every process exports at 0 from its start (per-camera ones once the camera is first seen), so
# that a rate() or an alert on a series sees it before the first increment.
PROTOCOL_ERROR_REASONS = (*REASONS, "bad_frames", "unexpected_message")  # decoding + a wrong envelope or peer
WORKER_DROP_REASONS = ("bad_jpeg", "too_large", "size_mismatch", "worker_full", "processing_error", "stale",
                       "shutdown")
CLAMP_DIRECTIONS = ("future", "past")  # a capture_ts after / before the worker.capture_window_s around receipt
BROKER_DROP_REASONS = ("no_worker", "queue_full", "camera_gone")
CAMERA_DROP_REASONS = ("camera_queue_full", "camera_not_connected")
CAMERA_OUTCOMES = ("captured", "sent", "unchanged", "queue_full", "not_connected", "reopened", "read_error",
                   "shutdown")
# unknown_key: a camera key not on the allow-list; unknown_{worker,publisher,subscriber}_key: the same on the
# worker, events-in and events-out sockets; camera_id_mismatch: an allow-listed camera key sending as a camera id
# that is not its own; the handshake reasons: see broker.auth
AUTH_REFUSED_REASONS = ("unknown_key", "unknown_worker_key", "unknown_publisher_key", "unknown_subscriber_key",
                        "camera_id_mismatch", "mechanism_mismatch", "handshake_aborted", "handshake")
EVENTS_DROPPED_REASONS = ("outbox_full", "stale")
# The operations a worker's store (store.buffered.BufferedStore) times and counts, and the kinds of writes it buffers
STORE_OPERATIONS = ("search", "sync_persons", "sync_visitors", "read_persons", "write_persons", "rejections",
                    "search_negatives", "sync_negatives", "read_negatives", "write_negatives", "search_visitors",
                    "match_or_create", "visitor_seen", "merge_visitor", "read_visitors", "write_visitors",
                    "expire_visitors", "append_events", "rename_events", "query_events", "expire_events", "put_live",
                    "remove_live", "rename_live", "read_live", "expire_live", "put_camera", "put_crop", "read_crop",
                    "remove_crop", "expire_crops", "audit_append", "audit_forget", "audit_read", "record_erasure",
                    "read_erasures")
STORE_BUFFER_KINDS = ("events", "live_tracks", "crops", "visitors")

STAGES = ("capture_to_send", "broker", "decode", "detect", "embed", "search", "track", "publish")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STORE_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                         2.5, 5.0, 10.0)  # a Redis round trip on a LAN is well under a millisecond
TIME_TO_NAME_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)
TRACK_LOST_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)  # a tracker waits seconds, not ms

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
CAMERA_FAILOVERS = f"{PREFIX}_camera_failovers_total"  # counter, labels: camera: moves to the next broker endpoint
CAMERA_BROKER_INDEX = f"{PREFIX}_camera_broker_index"  # gauge, labels: camera: position in its broker list in use
CAMERA_OPEN_FAILURES = f"{PREFIX}_camera_open_failures_total"  # counter, labels: camera: failed opens of its source
