"""The camera node agent: a capture thread filling a small queue, and a sender loop (this thread) that owns the
ZeroMQ DEALER socket, sends frames only while it holds broker credits, heartbeats, and follows broker restarts.

The broker grants credits in its heartbeats (``Heartbeat(role="broker", credits=n)``: n more frames). A changed
broker ``sender`` is a new broker process: credits start from zero until it grants its window. A broker silent
for ``DEAD_AFTER_S`` is lost: credits drop to zero, ZeroMQ keeps reconnecting, capture goes on (frames beyond
the queue are dropped and counted), and frames flow again as soon as a broker grants credits.

Given several broker endpoints (in failover order), a node whose broker is silent for ``DEAD_AFTER_S`` (or that
never heard one there) fails over: it closes its DEALER, connects a new one (same routing id, same CURVE keys) to
the next endpoint, starts from zero credits, keeps its captured frames and counts the move in
``argusnet_camera_failovers_total``. Frames still queued in the closed socket (counted as sent) are lost with the
broker they were meant for.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Sequence

import zmq
from prometheus_client import Counter, Gauge, Histogram

from camera_node.capture import CapturedFrame, CaptureLoop, FrameQueue
from camera_node.capture import encode_jpeg as encode_jpeg  # where bench/ imports it from
from camera_node.config import CameraConfig
from camera_node.flow import FlowController
from camera_node.memory import return_freed_frames
from camera_node.sources import open_source
from shared import metrics as m
from shared.errors import ConfigError, ProtocolError
from shared.keys import SecurityConfig, load_public_key, load_secret_key
from shared.logs import RateLimitedLog
from shared.protocol import Frame, Heartbeat, ProtocolConfig, decode_as, encode
from shared.zmq_defaults import (
    CLOSE_LINGER_MS,
    DEAD_AFTER_S,
    HEARTBEAT_INTERVAL_S,
    configure,
    parse_endpoints,
)

log = logging.getLogger(__name__)
POLL_MS = 10
CAMERA_MAX_SIDE = f"{m.PREFIX}_camera_max_side"  # gauge, labels: camera: longer side flow control allows now
CAMERA_LINK_RATE = f"{m.PREFIX}_camera_link_bytes_per_second"  # gauge, labels: camera: measured (0: not yet)
CAMERA_IN_FLIGHT = f"{m.PREFIX}_camera_in_flight_bytes"  # gauge, labels: camera: sent, not yet credited


class CameraMetrics:
    """A node's metrics; its labelled counters exist at 0 for every known label value from the start."""

    def __init__(self, registry: Any, camera: str) -> None:
        self.frames = Counter(m.CAMERA_FRAMES, "Camera frames by outcome: captured, sent, unchanged (motion gate), "
                              "queue_full (dropped), reopened (source), read_error (a frame the source could not "
                              "deliver)", ["camera", "outcome"], registry=registry)
        self.dropped = Counter(m.FRAMES_DROPPED, "Frames dropped", ["camera", "reason"], registry=registry)
        self.queue_depth = Gauge(m.QUEUE_DEPTH, "Frames waiting", ["queue"], registry=registry)
        self.fps = Gauge(m.CAMERA_FPS, "Frame rate the node currently sends at", ["camera"], registry=registry)
        self.quality = Gauge(m.CAMERA_JPEG_QUALITY, "JPEG quality the node currently uses", ["camera"],
                             registry=registry)
        self.credits = Gauge(m.CAMERA_CREDITS, "Broker credits held", ["camera"], registry=registry)
        self.max_side = Gauge(CAMERA_MAX_SIDE, "Longer side (px) flow control lets frames have now", ["camera"],
                              registry=registry)
        self.link_rate = Gauge(CAMERA_LINK_RATE, "Link rate to the broker as the node measures it from its "
                               "credits (bytes/s; 0 until the first frame is credited)", ["camera"],
                               registry=registry)
        self.in_flight = Gauge(CAMERA_IN_FLIGHT, "Bytes of frames sent and not yet credited by the broker",
                               ["camera"], registry=registry)
        self.failovers = Counter(m.CAMERA_FAILOVERS, "Moves to the next broker endpoint after the broker in use fell "
                                 "silent", ["camera"], registry=registry)
        self.broker_index = Gauge(m.CAMERA_BROKER_INDEX, "Position (from 0) in the node's broker endpoint list of the "
                                  "broker it uses now", ["camera"], registry=registry)
        self.failovers.labels(camera=camera)
        self.open_failures = Counter(m.CAMERA_OPEN_FAILURES, "Failed opens of the camera's source (a dead stream, "
                                     "a missing or unreadable file, an absent device); each is retried with "
                                     "back-off", ["camera"], registry=registry)
        self.open_failures.labels(camera=camera)
        self.stage = Histogram(m.STAGE_LATENCY, "Latency per stage", ["stage"], buckets=m.LATENCY_BUCKETS,
                               registry=registry)
        self.protocol_errors = Counter(m.PROTOCOL_ERRORS, "Bad messages dropped", ["reason"], registry=registry)
        for outcome in m.CAMERA_OUTCOMES:
            self.frames.labels(camera=camera, outcome=outcome)
        for reason in m.CAMERA_DROP_REASONS:
            self.dropped.labels(camera=camera, reason=reason)
        for reason in m.PROTOCOL_ERROR_REASONS:
            self.protocol_errors.labels(reason=reason)


class CameraNode:
    """``run(stop)`` captures and sends until ``stop`` is set (or a non-looping file ends and its queue drains)."""

    def __init__(self, cfg: CameraConfig, broker_endpoint: str | Sequence[str], security: SecurityConfig,
                 protocol: ProtocolConfig, registry: Any, context: zmq.Context | None = None) -> None:
        self.cfg = cfg
        try:
            self.endpoints = parse_endpoints(broker_endpoint)
        except ValueError as exc:
            raise ConfigError(f"camera {cfg.id}: broker endpoints: {exc}") from exc
        self._index = 0
        self.max_bytes = protocol.max_message_bytes
        self.metrics = CameraMetrics(registry, cfg.id)
        self.flow = FlowController(cfg)
        self.queue = FrameQueue(cfg.queue)
        self.ctx = context or zmq.Context.instance()
        self._keys, self._server_key = self._load_keys(security)
        self._connected_at = 0.0
        self.sock = self._socket()
        self.rate_log = RateLimitedLog(log)
        self.credits = 0
        self.sent = 0
        self._broker: str | None = None
        self._broker_seen = 0.0
        self._hb_seq = 0
        self._stop_capture = threading.Event()
        self.capture = CaptureLoop(cfg, lambda: open_source(cfg, self._stop_capture), self.queue,
                                   lambda: self.flow.fps, self._count, max_side=lambda: self.flow.max_side,
                                   quality=lambda: self.flow.quality,
                                   open_failed=self.metrics.open_failures.labels(camera=cfg.id).inc)

    @property
    def endpoint(self) -> str:
        """The broker endpoint in use now."""
        return self.endpoints[self._index]

    @staticmethod
    def _load_keys(security: SecurityConfig):
        if not security.curve:
            return None, None
        if security.camera_secret_key is None or security.broker_public_key is None:
            raise ConfigError("security.curve is on: security.camera_secret_key and security.broker_public_key "
                              "must name key files (`argusnet keys gen`)")
        return load_secret_key(security.camera_secret_key), load_public_key(security.broker_public_key)

    def _socket(self) -> zmq.Socket:
        sock = configure(self.ctx.socket(zmq.DEALER))
        routing_id = b"cam:" + self.cfg.id.encode("ascii")
        if self._keys is not None:
            sock.curve_publickey, sock.curve_secretkey = self._keys.public, self._keys.secret
            sock.curve_serverkey = self._server_key
            # under CURVE the broker knows the camera by its key; a random part the network never sees (the
            # handshake is encrypted) keeps another connection from taking this routing id and locking it out
            routing_id += b"/" + secrets.token_hex(8).encode("ascii")
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
        sock.connect(self.endpoint)
        self._connected_at = time.monotonic()
        self.metrics.broker_index.labels(camera=self.cfg.id).set(self._index)
        return sock

    def _count(self, outcome: str) -> None:
        self.metrics.frames.labels(camera=self.cfg.id, outcome=outcome).inc()
        if outcome == "queue_full":
            self.metrics.dropped.labels(camera=self.cfg.id, reason="camera_queue_full").inc()

    def run(self, stop: threading.Event) -> None:
        return_freed_frames()
        thread = threading.Thread(target=self.capture.run, args=(self._stop_capture,), name=f"capture-{self.cfg.id}",
                                  daemon=True)
        thread.start()
        next_beat = 0.0
        try:
            while not stop.is_set() and (thread.is_alive() or len(self.queue)):
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = now + HEARTBEAT_INTERVAL_S
                self._receive(POLL_MS)
                self._send_ready(now)
                self._gauges()
        finally:
            self._stop_capture.set()
            thread.join(timeout=5)
            left = len(self.queue)
            if left:  # frames captured but never sent: counted, so captured = sent + every drop
                self.metrics.frames.labels(camera=self.cfg.id, outcome="shutdown").inc(left)
            self.sock.close(linger=CLOSE_LINGER_MS)  # frames counted as sent must reach the broker

    def _receive(self, timeout_ms: int) -> None:
        if not self.sock.poll(timeout_ms, zmq.POLLIN):
            self._check_broker(time.monotonic())
            return
        while True:
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_message(data)

    def _check_broker(self, now: float) -> None:
        """A broker silent for DEAD_AFTER_S (since it was last heard, or since the node connected) is lost: with
        other endpoints the node fails over to the next one; with one, it waits for that broker to come back."""
        if now - max(self._broker_seen, self._connected_at) <= DEAD_AFTER_S:
            return
        if len(self.endpoints) > 1:
            self._fail_over()
        elif self._broker is not None:
            log.warning("camera %s: broker %s silent for %.1f s; capture goes on, sending resumes when a broker "
                        "grants credits", self.cfg.id, self._broker, DEAD_AFTER_S)
            self._broker, self.credits = None, 0
            self.flow.reset()

    def _fail_over(self) -> None:
        """Close the DEALER and connect a new one to the next endpoint; credits start from zero, frames stay."""
        old = self.endpoint
        self.sock.close(0)
        self._index = (self._index + 1) % len(self.endpoints)
        self.sock = self._socket()
        self._broker, self.credits = None, 0
        self.flow.reset()
        self.metrics.failovers.labels(camera=self.cfg.id).inc()
        log.warning("camera %s: broker at %s silent for %.1f s: failing over to %s", self.cfg.id, old, DEAD_AFTER_S,
                    self.endpoint)
        self._heartbeat()  # the new broker learns of this camera (and grants credits) without waiting a beat

    def _on_message(self, data: bytes) -> None:
        try:
            hb = decode_as(Heartbeat, data, self.max_bytes)
        except ProtocolError as exc:
            self.metrics.protocol_errors.labels(reason=exc.reason).inc()
            self.rate_log.warning(exc.reason, "camera %s: dropped a bad message (%s): %s", self.cfg.id, exc.reason,
                                  exc)
            return
        if hb.role != "broker":
            self.metrics.protocol_errors.labels(reason="unexpected_message").inc()
            return
        if hb.sender != self._broker:
            if self._broker is not None:
                log.info("camera %s: broker restarted (%s -> %s)", self.cfg.id, self._broker, hb.sender)
            self._broker, self.credits = hb.sender, 0
            self.flow.reset()
        self._broker_seen = time.monotonic()
        self.credits += hb.credits
        self.flow.credited(self._broker_seen, hb.credits)

    def _send_ready(self, now: float) -> None:
        """Send waiting frames while a credit is held and the flow controller lets the bytes go."""
        self.flow.update(now, self.queue.offered)
        while True:
            head = self.queue.peek()
            if head is None or not self.flow.may_send(len(head.jpeg)):
                return  # nothing waits, or the link's share is in flight: frames wait here, newest first
            if self.credits <= 0:
                self.flow.credit_starved(now)
                return
            item = self.queue.get()
            if item is not None:
                self._send(item)

    def _send(self, item: CapturedFrame) -> None:
        frame = Frame(camera_id=self.cfg.id, seq=item.seq, capture_ts=item.capture_ts, send_ts=time.time(),
                      width=item.width, height=item.height, jpeg=item.jpeg)
        payload = encode(frame)
        try:
            self.sock.send(payload, zmq.NOBLOCK)
        except zmq.Again:  # not connected: the frame is lost here, counted like a queue drop
            self.metrics.dropped.labels(camera=self.cfg.id, reason="camera_not_connected").inc()
            self.metrics.frames.labels(camera=self.cfg.id, outcome="not_connected").inc()
            return
        self.credits -= 1
        self.sent += 1
        now = time.monotonic()
        self.flow.sent(now, len(payload), item.quality, max(item.width, item.height), item.source_side)
        self.metrics.frames.labels(camera=self.cfg.id, outcome="sent").inc()
        self.metrics.stage.labels(stage="capture_to_send").observe(max(0.0, now - item.read_at))

    def _heartbeat(self) -> None:
        self._hb_seq += 1
        hb = Heartbeat(sender=self.cfg.id, role="camera", seq=self._hb_seq, ts=time.time(), credits=0, cameras=())
        try:
            self.sock.send(encode(hb), zmq.NOBLOCK)
        except zmq.Again:
            self.rate_log.warning("hb_full", "camera %s: broker not reachable, heartbeat not sent", self.cfg.id)

    def summary(self) -> dict[str, int]:
        """Frames by outcome so far: captured = sent + unchanged + queue_full + not_connected + shutdown."""
        counts = {}
        for metric in self.metrics.frames.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels.get("camera") == self.cfg.id:
                    counts[sample.labels["outcome"]] = int(sample.value)
        return counts

    def _gauges(self) -> None:
        self.metrics.fps.labels(camera=self.cfg.id).set(self.flow.fps)
        self.metrics.quality.labels(camera=self.cfg.id).set(self.flow.quality)
        self.metrics.max_side.labels(camera=self.cfg.id).set(self.flow.max_side)
        self.metrics.link_rate.labels(camera=self.cfg.id).set(self.flow.link_rate() or 0.0)
        self.metrics.in_flight.labels(camera=self.cfg.id).set(self.flow.in_flight_bytes)
        self.metrics.credits.labels(camera=self.cfg.id).set(self.credits)
        self.metrics.queue_depth.labels(queue=f"camera:{self.cfg.id}").set(len(self.queue))
