"""The ZeroMQ broker: cameras -> per-camera queues -> workers, with credits both ways, plus the events proxy.

Sockets (all owned by the thread that calls ``run``; they are bound in the constructor so that endpoints given as
``tcp://127.0.0.1:*`` can be read back from ``Broker.endpoints`` before ``run`` starts):

- ``frontend`` ROUTER (cameras, routing ids ``cam:<id>``);
- ``backend`` ROUTER (workers, routing ids ``wrk:<id>``);
- ``events_in`` XSUB (workers' PUB sockets connect) proxied both ways to ``events_out`` XPUB (subscribers).

With ``security.curve`` every one of them is a CURVE server with its own allow-list (``broker.auth``), and a
camera is who its key says: a frame or heartbeat is taken only under a camera id its key is bound to (else it is
refused and counted, ``argusnet_auth_refused_total{reason="camera_id_mismatch"}``), and the broker answers each
camera on the connection it last heard that camera from, whatever routing id the connection chose (a node under
CURVE adds a random part to its routing id, so no other connection can take that id and lock it out). Without
CURVE, a broker bound off loopback refuses to start unless ``broker.allow_plaintext`` says so.

Each worker heartbeat's ``cameras`` are the cameras that worker served lately, for this broker or another: the
routing table prefers that worker when it assigns one of them here (see ``broker.routing``), which is how brokers
share one camera -> worker assignment without talking to each other.

Every message on the two ROUTERs is one msgpack payload from ``shared.protocol`` after the identity frame. A
message that is not exactly that, or that is not what that peer may send, is dropped, counted in
``argusnet_protocol_errors_total{reason}`` and logged once per reason per minute; the broker keeps serving.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import Any, Callable

import zmq

from broker.auth import BrokerSecurity
from broker.config import BrokerConfig
from broker.metrics import BrokerMetrics
from broker.queues import Credits, FrameQueues, Queued
from broker.routing import Move, Routing, Seen
from shared.errors import ArgusError, ConfigError, ProtocolError
from shared.keys import SecurityConfig
from shared.logs import RateLimitedLog
from shared.protocol import (
    MAX_CAMERAS,
    Frame,
    Heartbeat,
    ProtocolConfig,
    decode,
    encode,
)
from shared.zmq_defaults import (
    DEAD_AFTER_S,
    EVENT_HWM,
    FRAME_HWM,
    HEARTBEAT_INTERVAL_S,
    configure,
    off_loopback,
)

log = logging.getLogger(__name__)

CAMERA_PREFIX = b"cam:"
WORKER_PREFIX = b"wrk:"
POLL_MS = 50              # longest wait in one poll: bounds how late a stop request is seen
BATCH = 256               # messages read from one socket before the others get a turn
HARD_LIMIT_FACTOR = 2     # ZeroMQ refuses (and disconnects) messages over this many times max_message_bytes
CLOSE_WAIT_S = 5.0        # how long close() waits for a running loop to return


def refuse_plaintext_off_loopback(cfg: BrokerConfig) -> None:
    """ConfigError when a broker without CURVE would bind an endpoint other machines reach (frames are faces,
    events carry names), unless ``broker.allow_plaintext`` accepts that."""
    exposed = [f"{name} {getattr(cfg, name)}" for name in ("frontend", "backend", "events_in", "events_out")
               if off_loopback(getattr(cfg, name))]
    if exposed and not cfg.allow_plaintext:
        raise ConfigError(f"broker: {exposed[0]} is reachable from other machines and security.curve is off: "
                          "frames and events would cross the network unencrypted and unauthenticated; turn "
                          "security.curve on, bind 127.0.0.1, or set broker.allow_plaintext: true to accept that")


def peer_id(identity: bytes, prefix: bytes) -> str | None:
    """The id in a routing identity ``prefix + id`` (ASCII), or None when it is not of that form."""
    if not identity.startswith(prefix):
        return None
    try:
        return identity[len(prefix):].decode("ascii")
    except UnicodeDecodeError:
        return None


class Broker:
    """The broker. ``run(stop_event)`` serves until the event is set; ``close()`` releases the sockets."""

    def __init__(self, cfg: BrokerConfig, security: SecurityConfig, protocol: ProtocolConfig, registry: Any,
                 context: zmq.Context | None = None) -> None:
        self.cfg = cfg
        self.max_bytes = protocol.max_message_bytes
        self.incarnation = "broker." + secrets.token_hex(4)
        self.metrics = BrokerMetrics(registry)
        self.rate_log = RateLimitedLog(log)
        self.routing = Routing(DEAD_AFTER_S)
        self.queues = FrameQueues(cfg.camera_queue)
        self.credits = Credits(cfg.camera_credits)
        self._own_context = context is None
        self.ctx = zmq.Context() if context is None else context
        self._hb_seq = 0
        self._close_requested = threading.Event()
        self._running = threading.Lock()
        self._closed = False
        self.sockets: dict[str, zmq.Socket] = {}
        if cfg.camera_credits > cfg.camera_queue:
            log.info("broker.camera_credits (%d) > broker.camera_queue (%d): a camera faster than its worker "
                        "gets credits back from queue_full drops and never slows down", cfg.camera_credits,
                        cfg.camera_queue)
        self.security: BrokerSecurity | None = None
        self.camera_peers: dict[str, bytes] = {}  # camera id -> the routing id of its latest connection
        try:  # a failure here (bad keys, a port in use) releases the sockets and context made so far
            if security.curve:
                self.security = BrokerSecurity(self.ctx, security, self.metrics, self.rate_log)
            else:
                refuse_plaintext_off_loopback(cfg)
            self.endpoints = self._bind()
        except BaseException:
            self._release()
            raise
        log.info("broker %s: cameras %s, workers %s, events in %s, events out %s", self.incarnation,
                 self.endpoints["frontend"], self.endpoints["backend"], self.endpoints["events_in"],
                 self.endpoints["events_out"])

    # ------------------------------------------------------------------------------------------ sockets
    def _socket(self, name: str, kind: int, endpoint: str, hwm: int) -> str:
        sock = configure(self.ctx.socket(kind), hwm=hwm)
        self.sockets[name] = sock
        if kind == zmq.ROUTER:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT_FACTOR * self.max_bytes)
        if self.security is not None:
            self.security.secure(name, sock)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ArgusError(f"broker: cannot bind the {name} socket to {endpoint}: {exc}") from exc
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    def _bind(self) -> dict[str, str]:
        return {
            "frontend": self._socket("frontend", zmq.ROUTER, self.cfg.frontend, FRAME_HWM),
            "backend": self._socket("backend", zmq.ROUTER, self.cfg.backend, FRAME_HWM),
            "events_in": self._socket("events_in", zmq.XSUB, self.cfg.events_in, EVENT_HWM),
            "events_out": self._socket("events_out", zmq.XPUB, self.cfg.events_out, EVENT_HWM),
        }

    def _poller(self) -> tuple[zmq.Poller, dict[zmq.Socket, Callable[[], None]]]:
        s = self.sockets
        handlers: dict[zmq.Socket, Callable[[], None]] = {
            s["frontend"]: lambda: self._drain(s["frontend"], self._on_camera_message),
            s["backend"]: lambda: self._drain(s["backend"], self._on_worker_message),
            s["events_in"]: lambda: self._proxy(s["events_in"], s["events_out"]),
            s["events_out"]: lambda: self._proxy(s["events_out"], s["events_in"]),
        }
        if self.security is not None:
            for name, monitor in self.security.monitors.items():
                handlers[monitor] = lambda name=name: self.security.on_monitor(name)
        poller = zmq.Poller()
        for sock in handlers:
            poller.register(sock, zmq.POLLIN)
        return poller, handlers

    # ------------------------------------------------------------------------------------------ main loop
    def run(self, stop_event: threading.Event) -> None:
        """Serve until ``stop_event`` is set (or ``close()`` is called from another thread)."""
        if self._closed:
            raise ArgusError("broker: run() called after close()")
        if not self._running.acquire(blocking=False):
            raise ArgusError("broker: run() is already running")
        try:
            self._loop(stop_event)
        finally:
            self._running.release()

    def _loop(self, stop_event: threading.Event) -> None:
        poller, handlers = self._poller()
        next_tick = time.monotonic()
        while not stop_event.is_set() and not self._close_requested.is_set():
            wait_ms = min(POLL_MS, max(0.0, (next_tick - time.monotonic()) * 1000.0))
            for sock, _event in poller.poll(wait_ms):
                handlers[sock]()
            self._dispatch()
            self._flush_grants(deferred=False)
            now = time.monotonic()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + HEARTBEAT_INTERVAL_S

    def _drain(self, sock: zmq.Socket, handler: Callable[[list[zmq.Frame]], None]) -> None:
        for _ in range(BATCH):
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            handler(parts)

    def _proxy(self, source: zmq.Socket, target: zmq.Socket) -> None:
        """Forward events (XSUB -> XPUB) or subscriptions (XPUB -> XSUB), message parts intact."""
        for _ in range(BATCH):
            try:
                parts = source.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            try:
                target.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.rate_log.warning("events_full", "events proxy: the other side is full, a message was dropped")

    # ------------------------------------------------------------------------------------------ input
    def _protocol_error(self, socket_name: str, reason: str, message: str) -> None:
        self.metrics.protocol_errors.labels(reason=reason).inc()
        self.rate_log.warning(reason, "dropped a bad message on the %s socket (%s): %s", socket_name, reason, message)

    def _decode(self, socket_name: str, parts: list[zmq.Frame]) -> tuple[bytes, Any] | None:
        """(identity, message) of a 2-part ROUTER message, or None after counting why it was refused."""
        if len(parts) != 2:
            self._protocol_error(socket_name, "bad_frames", f"expected 1 payload frame, got {len(parts) - 1}")
            return None
        try:
            return parts[0].bytes, decode(parts[1].buffer, self.max_bytes)
        except ProtocolError as exc:
            self._protocol_error(socket_name, exc.reason, str(exc))
            return None

    def _on_camera_message(self, parts: list[zmq.Frame]) -> None:
        decoded = self._decode("frontend", parts)
        if decoded is None:
            return
        identity, msg = decoded
        if isinstance(msg, Frame):
            claimed = msg.camera_id
        elif isinstance(msg, Heartbeat) and msg.role == "camera":
            claimed = msg.sender
        else:
            self._protocol_error("frontend", "unexpected_message", f"a {type(msg).__name__} from peer "
                                 f"{identity[:80]!r} (cameras send their own frames and camera heartbeats)")
            return
        camera = self._camera_of(identity, parts[1], claimed)
        if camera is None:
            return
        self.camera_peers[camera] = identity
        if isinstance(msg, Frame):
            self._on_frame(camera, parts[1])
        else:
            self._camera_seen(camera, msg.seq)

    def _camera_of(self, identity: bytes, payload: zmq.Frame, claimed: str) -> str | None:
        """The camera a message comes from: under CURVE, ``claimed`` if its key is bound to that id; without it,
        the id in the routing identity ``cam:<id>`` when the message claims that id. None after counting a refusal."""
        if self.security is None:
            if peer_id(identity, CAMERA_PREFIX) == claimed:
                return claimed
            self._protocol_error("frontend", "unexpected_message", f"a message of camera {claimed!r} from peer "
                                 f"{identity[:80]!r} (cameras send their own frames and camera heartbeats)")
            return None
        user_id = payload.get("User-Id")
        allowed = self.security.camera_ids(user_id)
        if claimed in allowed:
            return claimed
        self.metrics.auth_refused.labels(reason="camera_id_mismatch").inc()
        self.rate_log.warning("auth:camera_id_mismatch:" + ",".join(sorted(allowed))[:200],
                              "refused a message sent as camera %r by the key of %s (public key %s): a camera key "
                              "sends only as its own camera id(s)", claimed, ", ".join(sorted(allowed)) or "no camera",
                              user_id)
        return None

    def _on_worker_message(self, parts: list[zmq.Frame]) -> None:
        decoded = self._decode("backend", parts)
        if decoded is None:
            return
        identity, msg = decoded
        worker = peer_id(identity, WORKER_PREFIX)
        if isinstance(msg, Heartbeat) and msg.role == "worker" and msg.sender == worker:
            self._on_worker_heartbeat(worker, msg)
        else:
            self._protocol_error("backend", "unexpected_message", f"a {type(msg).__name__} from peer "
                                 f"{identity[:80]!r} (workers send their own worker heartbeats)")

    def _camera_seen(self, camera: str, heartbeat_seq: int | None) -> None:
        seen, moves = self.routing.camera_seen(camera, time.monotonic(), heartbeat_seq)
        if seen in (Seen.NEW, Seen.RESTARTED):
            self.credits.open_camera(camera)
            log.info("camera %s %s: granting %d credits", camera, seen.value, self.cfg.camera_credits)
        self._apply_moves(moves)

    def _on_frame(self, camera: str, payload: zmq.Frame) -> None:
        received = time.perf_counter()
        self._camera_seen(camera, None)
        self.metrics.frame_in(camera)
        item = Queued(camera, payload, received, self.credits.frame_arrived(camera))
        if item.epoch is None:
            self.metrics.uncredited.labels(camera=camera).inc()
        worker = self.routing.worker_of(camera)
        if worker is None:
            self._drop(item, "no_worker")
            return
        displaced = self.queues.push(item, worker)
        if displaced is not None:
            self._drop(displaced, "queue_full")

    def _on_worker_heartbeat(self, worker: str, hb: Heartbeat) -> None:
        seen, moves = self.routing.worker_seen(worker, hb.seq, time.monotonic(), hb.cameras, hb.tracking)
        self.credits.worker_grant(worker, hb.credits, reset=seen in (Seen.NEW, Seen.RESTARTED))
        self._apply_moves(moves)
        if seen is not Seen.KNOWN:
            log.info("worker %s %s with %d credits", worker, seen.value, hb.credits)
            self._heartbeat_worker(worker)

    # ------------------------------------------------------------------------------------------ routing
    def _drop(self, item: Queued, reason: str) -> None:
        self.metrics.drop(item.camera, reason)
        self.credits.frame_left(item)

    def _apply_moves(self, moves: list[Move] | tuple[Move, ...]) -> None:
        for move in moves:
            for item in self.queues.reassign(move.camera, move.new):
                self._drop(item, "no_worker")
            if move.old is not None or move.new is None or move.claimed:
                log.info("camera %s: worker %s -> %s%s", move.camera, move.old, move.new,
                         " (it claims the camera: it served it lately)" if move.claimed else "")

    def _dispatch(self) -> None:
        """Send waiting frames to every live worker while it has credits, round-robin across its cameras."""
        for worker in self.routing.live_workers():
            while self.credits.worker_credits(worker) > 0 and self.queues.has_work(worker):
                item = self.queues.pop(worker)
                if item is None:
                    break
                if not self._send(self.sockets["backend"], WORKER_PREFIX, worker, item.payload):
                    self.queues.unpop(item)
                    break
                self.credits.use_worker_credit(worker)
                self.credits.frame_left(item)
                self.metrics.frame_out(item.camera, time.perf_counter() - item.received)

    def _send(self, sock: zmq.Socket, prefix: bytes, peer: str, payload: Any) -> bool:
        """Send one payload to a ROUTER peer without blocking; False when it is full or not connected. A camera
        is sent to on the connection it was last heard from."""
        identity = self.camera_peers.get(peer) if prefix == CAMERA_PREFIX else None
        try:
            sock.send_multipart([identity or prefix + peer.encode("ascii"), payload], zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:  # its pipe is at the high-water mark: normal back-pressure, try again later
            log.debug("%s%s: send queue full, message kept for later", prefix.decode(), peer)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            # a camera or worker that stopped or restarts: normal, so INFO; what it was owed is sent when it is back
            self.rate_log.info("peer_gone:" + peer, "%s%s is not connected (stopped or restarting): message kept "
                               "for later", prefix.decode(), peer)
        return False

    # ------------------------------------------------------------------------------------------ heartbeats
    def _heartbeat(self, credits: int, cameras: tuple[str, ...] = ()) -> bytes:
        self._hb_seq += 1
        return encode(Heartbeat(sender=self.incarnation, role="broker", seq=self._hb_seq, ts=time.time(),
                                credits=credits, cameras=cameras[:MAX_CAMERAS]))

    def _heartbeat_worker(self, worker: str) -> None:
        self._send(self.sockets["backend"], WORKER_PREFIX, worker,
                   self._heartbeat(0, self.routing.cameras_of(worker)))

    def _flush_grants(self, deferred: bool) -> set[str]:
        """Send the credits owed to cameras (with ``deferred``: also those that failed before); returns the cameras
        that were sent a heartbeat."""
        sent = set()
        for camera, n in self.credits.take_grants(deferred):
            if self._send(self.sockets["frontend"], CAMERA_PREFIX, camera, self._heartbeat(n)):
                sent.add(camera)
            else:
                self.credits.return_grant(camera, n)
        return sent

    def _tick(self, now: float) -> None:
        """Once per heartbeat interval: liveness, heartbeats to every peer, gauges."""
        expired = self.routing.expire(now)
        for camera in expired.gone_cameras:
            for item in self.queues.reassign(camera, None):
                self._drop(item, "camera_gone")
            self.credits.close_camera(camera)
            self.camera_peers.pop(camera, None)
            self.metrics.queue_depth.remove(camera)
            log.info("camera %s silent for %.1f s: forgotten", camera, DEAD_AFTER_S)
        for worker in expired.dead_workers:
            log.warning("worker %s silent for %.1f s: dead, its cameras move to live workers", worker,
                        DEAD_AFTER_S)
        self._apply_moves(expired.moves)
        self._dispatch()
        granted = self._flush_grants(deferred=True)
        for camera in self.routing.cameras():
            if camera not in granted:
                self._send(self.sockets["frontend"], CAMERA_PREFIX, camera, self._heartbeat(0))
            self.metrics.queue_depth.labels(camera=camera).set(self.queues.depth(camera))
        for worker in self.routing.live_workers():
            self._heartbeat_worker(worker)
        load = self.routing.load()
        self.metrics.set_workers(load, {w: self.credits.worker_credits(w) for w in load})

    # ------------------------------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Stop a running loop (waiting for it to return) and release the sockets; safe to call twice."""
        if self._closed:
            return
        self._close_requested.set()
        if not self._running.acquire(timeout=CLOSE_WAIT_S):
            raise ArgusError(f"broker: the run loop did not stop within {CLOSE_WAIT_S} s; sockets left open")
        try:
            self._release()
        finally:
            self._running.release()

    def _release(self) -> None:
        self._closed = True
        if self.security is not None:
            self.security.close(self.sockets)
        for sock in self.sockets.values():
            sock.close(0)
        self.sockets.clear()
        if self._own_context:
            self.ctx.term()
