"""The worker service: receive frames from the broker, batch them across cameras, run a frame processor,
publish ``TrackEvent``s, and keep the broker informed with heartbeats and credit grants.

A worker given several brokers (``broker.worker_backends``, ``--backend A,B``) serves every one at once: one DEALER
per broker, each with its own heartbeats, liveness and credits (each broker is granted the worker's full
``capacity``, and a finished frame's credit goes back to the broker that sent it); events go to every
``events_in`` endpoint through one PUB socket connected to all of them.

One I/O thread owns the ZeroMQ sockets (they are not thread-safe) and decodes the JPEGs; one processing thread
plans and finishes batches (tracking, recognition, the store: each camera's frames in order) while a pool of
``worker.detect_threads`` runs their detection, several batches at once (`gpu_worker.inflight`), so a slow batch
never delays a heartbeat and detection uses every core.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import Counter as Tally
from dataclasses import dataclass, field

import simplejpeg
import zmq
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.config import BrokerConfig
from gpu_worker.admission import Admission, CameraBook, check_header, clamp_capture
from gpu_worker.config import WorkerConfig
from gpu_worker.inflight import POLL_S, DetectionPool, InFlight
from gpu_worker.load import LoadMonitor
from gpu_worker.processing import DecodedFrame, FrameProcessor
from gpu_worker.served import ServedCameras
from shared import metrics as m
from shared.errors import ProtocolError
from shared.keys import SecurityConfig, curve_client
from shared.logs import RateLimitedLog
from shared.protocol import EVENT_TYPES, MAX_CAMERAS, Frame, Heartbeat, ProtocolConfig, TrackEvent, decode, encode
from shared.zmq_defaults import DEAD_AFTER_S, EVENT_HWM, HEARTBEAT_INTERVAL_S, configure

log = logging.getLogger(__name__)
POLL_MS = 20
STOP_JOIN_S = 10.0  # how long a stopping worker waits for the batch in progress
IDLE_S = 0.5  # with no frame for this long, the processing thread does the processor's housekeeping (idle())
OUTBOX_EVENTS = 10_000  # events waiting for the I/O thread to publish (see _Outbox)
# Stale work is never published. A frame that waited STALE_S in this worker, or a batch whose processing took
# that long, was held up by a pause (SIGSTOP, a GC pause, an overloaded VM): the broker may have declared this
# worker dead and given its cameras to another worker, which tracks those people now. Such frames are dropped
# (reason "stale"), such a batch's events are dropped (events_dropped reason "stale") before they reach the event
# log (one decision for the log and the live stream: `_finish`), and the cameras' track state is abandoned without
# events; when the I/O loop itself was stopped for longer than DEAD_AFTER_S (< STALE_S), everything held is
# abandoned, the events waiting to be published included. Normal waits are milliseconds.
STALE_S = 2.0
# A frame held up before it reached this worker (in the broker's or this socket's buffers while the worker was
# paused) is told by its delay, capture -> received, against the camera's usual delay: the lowest delay seen,
# which may rise by DELAY_FLOOR_RISE_S a frame so that a camera whose clock is stepped forward is followed within
# a few seconds. Comparing delays to the camera's own floor makes the check immune to clock offsets between hosts.
DELAY_FLOOR_RISE_S = 0.05
# The delay floor resets as the age floor does: when every frame of a camera looked held up for DELAY_RESET_S (a
# backlog after a pause drains in well under a second; a floor set by a frame dated ahead, within
# worker.capture_window_s, or a camera clock stepped back, would otherwise drop its frames for minutes), the floor
# becomes the current delay.
DELAY_RESET_S = 5.0
FORGET_EVERY_S = 1.0  # how often the I/O loop looks for cameras to forget (worker.camera_forget_s)
# How far behind the worker is (the distant-face passes give way: gpu_worker.spare): a frame's age when it is planned
# over its camera's usual age, a floor that rises by AGE_FLOOR_RISE_S a frame (a backlog of 200 ms that lasts is
# noticed for minutes) and jumps to an age more than AGE_STEP_S over it (a camera's clock stepped forward: a backlog
# that large has its frames dropped as stale within a second anyway). Frames wait mostly in the broker, which holds
# what the worker has no credit for.
AGE_FLOOR_RISE_S = 0.0001
AGE_STEP_S = 1.0


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_in = Counter(m.FRAMES_IN, "Frames received", ["camera"], registry=registry)
        self.frames_out = Counter(m.FRAMES_OUT, "Frames processed", ["camera"], registry=registry)
        self.dropped = Counter(m.FRAMES_DROPPED, "Frames dropped", ["camera", "reason"], registry=registry)
        self.protocol_errors = Counter(m.PROTOCOL_ERRORS, "Bad messages dropped", ["reason"], registry=registry)
        self.queue_depth = Gauge(m.QUEUE_DEPTH, "Frames waiting", ["queue"], registry=registry)
        self.stage = Histogram(m.STAGE_LATENCY, "Latency per stage", ["stage"], buckets=m.LATENCY_BUCKETS,
                               registry=registry)
        self.end_to_end = Histogram(m.END_TO_END_LATENCY, "Capture to track_started / track_identified published",
                                    buckets=m.LATENCY_BUCKETS, registry=registry)
        self.time_to_name = Histogram(m.TIME_TO_NAME, "A track's first frame to the frame that named it (a person "
                                      "or a visitor)", buckets=m.TIME_TO_NAME_BUCKETS, registry=registry)
        self.track_lost = Histogram(m.TRACK_LOST_DELAY, "Last capture of a track to its track_ended published (the "
                                    "time the tracker waits before giving a face up)", buckets=m.TRACK_LOST_BUCKETS,
                                    registry=registry)
        self.events = Counter(m.EVENTS, "Track events published", ["type"], registry=registry)
        self.events_dropped = Counter(m.EVENTS_DROPPED, "Track events dropped before publishing", ["reason"],
                                      registry=registry)
        self.clamped = Counter(m.CAPTURE_TS_CLAMPED, "Frames whose capture_ts was clamped to worker.capture_window_s "
                               "around their receipt", ["direction"], registry=registry)
        self.cameras_refused = Counter(m.CAMERAS_REFUSED, "Frames refused: the worker holds worker.max_cameras "
                                       "cameras already", registry=registry)
        for direction in m.CLAMP_DIRECTIONS:
            self.clamped.labels(direction=direction)
        for reason in m.EVENTS_DROPPED_REASONS:
            self.events_dropped.labels(reason=reason)
        for reason in m.PROTOCOL_ERROR_REASONS:
            self.protocol_errors.labels(reason=reason)
        self._events = {kind: self.events.labels(type=kind) for kind in EVENT_TYPES}

    def observe(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)

    def camera_seen(self, camera: str) -> None:
        """A camera's first frame: its per-camera counters exist at 0 from now on."""
        self.frames_in.labels(camera=camera)
        self.frames_out.labels(camera=camera)
        for reason in m.WORKER_DROP_REASONS:
            self.dropped.labels(camera=camera, reason=reason)

    def camera_gone(self, camera: str) -> None:
        """A forgotten camera (worker.camera_forget_s): its per-camera series are removed."""
        self.frames_in.remove(camera)
        self.frames_out.remove(camera)
        for reason in m.WORKER_DROP_REASONS:
            self.dropped.remove(camera, reason)

    def published(self, event: TrackEvent, now: float) -> None:
        """Count a published event; capture -> publish is the end-to-end latency of a track that started or was
        named, and the track-lost delay of one that ended (its capture_ts is the last frame it was seen on)."""
        self._events[event.type].inc()
        delay = max(0.0, now - event.capture_ts)
        (self.track_lost if event.type == "track_ended" else self.end_to_end).observe(delay)
        if event.type == "track_identified" and event.time_to_name_ms is not None:
            self.time_to_name.observe(event.time_to_name_ms / 1000.0)


@dataclass
class _Outbox:
    """What the processing thread hands to the I/O thread: events (bounded: an I/O thread that cannot keep up
    loses the newest events, counted as ``outbox_full``; the event log in the store still has them) and how many
    frames of each broker link were finished since the last heartbeat (their credits)."""

    events: "queue.Queue[TrackEvent]" = field(default_factory=lambda: queue.Queue(maxsize=OUTBOX_EVENTS))
    finished: Tally = field(default_factory=Tally)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_finished(self, n: int, link: int = 0) -> None:
        with self.lock:
            self.finished[link] += n

    def add_finished_frames(self, frames: list[DecodedFrame]) -> None:
        with self.lock:
            self.finished.update(item.link for item in frames)

    def take_finished(self) -> Tally:
        with self.lock:
            taken, self.finished = self.finished, Tally()
            return taken


@dataclass
class _BrokerLink:
    """One broker the worker serves: its DEALER, who answers there, and the credits in flight with it."""

    index: int
    endpoint: str
    sock: zmq.Socket
    broker_id: str | None = None
    last_broker: str | None = None  # the broker heard last, kept while it is silent
    seen: float = 0.0
    hb_seq: int = 0
    outstanding: int = 0  # frames received from this broker and not finished yet
    owed: int = 0  # credits a heartbeat could not deliver, sent with the next one


class WorkerService:
    """One worker: ``run(stop_event)`` blocks until the event is set."""

    def __init__(self, worker_id: str, processor: FrameProcessor, cfg: WorkerConfig, broker: BrokerConfig,
                 protocol: ProtocolConfig, registry: CollectorRegistry, context: zmq.Context | None = None,
                 security: SecurityConfig | None = None) -> None:
        self.worker_id = worker_id
        # with security.curve, both sockets authenticate with the worker's key (the broker's worker allow-list)
        security = security or SecurityConfig()
        self.curve = curve_client(security, security.worker_secret_key, "worker")
        self.processor = processor
        self.cfg = cfg
        self.broker_cfg = broker
        self.max_bytes = protocol.max_message_bytes
        self.metrics = WorkerMetrics(registry)
        self.load = LoadMonitor(worker_id, registry)
        self.ctx = context or zmq.Context.instance()
        self.backends = broker.backend_endpoints()
        self.events_in = broker.events_in_endpoints()
        # room for every broker's full grant plus one more: a granted frame never finds the inbox full
        self.inbox: "queue.Queue[DecodedFrame | None]" = queue.Queue(maxsize=cfg.capacity * (len(self.backends) + 1))
        self.outbox = _Outbox()
        self.abandon_all = threading.Event()  # set by the I/O loop after a pause (see STALE_S)
        self._delay_floor: dict[str, float] = {}  # per camera: the usual capture -> received delay (s)
        self._held_since: dict[str, float] = {}  # per camera: when its frames began to look held up (see above)
        self._age_floor: dict[str, float] = {}  # per camera: the usual capture -> planned age (processing thread)
        self.io_tick = time.monotonic()  # the I/O loop's latest turn: it runs every POLL_MS unless paused
        self._pause_lock = threading.Lock()
        self._pause_start: float | None = None  # the io_tick a pause began after (each pause handled once)
        self.cameras = CameraBook(cfg.max_cameras, cfg.camera_forget_s)  # (I/O thread)
        self._next_forget = time.monotonic() + FORGET_EVERY_S
        self.rate_log = RateLimitedLog(log)
        self.served = ServedCameras(self.metrics.frames_out)  # the cameras each heartbeat claims (served lately)
        self.tracking: tuple[str, ...] = ()  # the cameras with a live track (set by the processing thread)

    # ------------------------------------------------------------------------------------------ I/O thread
    def _link(self, index: int, endpoint: str) -> _BrokerLink:
        dealer = configure(self.ctx.socket(zmq.DEALER))
        dealer.setsockopt(zmq.ROUTING_ID, b"wrk:" + self.worker_id.encode())
        if self.curve is not None:
            self.curve.apply(dealer)
        dealer.connect(endpoint)
        return _BrokerLink(index, endpoint, dealer)

    def run(self, stop: threading.Event) -> None:
        links = [self._link(i, endpoint) for i, endpoint in enumerate(self.backends)]
        pub = configure(self.ctx.socket(zmq.PUB), hwm=EVENT_HWM)
        if self.curve is not None:
            self.curve.apply(pub)
        for endpoint in self.events_in:
            pub.connect(endpoint)
        worker = threading.Thread(target=self._process_loop, args=(stop,), name=f"{self.worker_id}-process",
                                  daemon=True)
        self.io_tick = time.monotonic()
        worker.start()
        try:
            self._io_loop(stop, links, pub)
        finally:
            self._stop_processing(worker)
            for link in links:
                link.sock.close(0)
            pub.close(0)

    def _stop_processing(self, worker: threading.Thread) -> None:
        """Hand the processing thread its stop sentinel without blocking on a full inbox (frames that never got
        processed are counted as dropped for ``shutdown``), then wait for it to finish its batch."""
        while True:
            try:
                self.inbox.put_nowait(None)
                break
            except queue.Full:
                self._drop_one_queued()
        worker.join(timeout=STOP_JOIN_S)
        if worker.is_alive():
            log.warning("the processing thread is still busy %.0f s after stop; exiting anyway", STOP_JOIN_S)
            return
        while self._drop_one_queued():  # frames queued behind the batch that was in progress when stop came
            pass

    def _drop_one_queued(self) -> bool:
        """Take one item off the inbox, counting a frame as dropped for ``shutdown``; False when it was empty."""
        try:
            left = self.inbox.get_nowait()
        except queue.Empty:
            return False
        if left is not None:
            self.metrics.dropped.labels(camera=left.camera, reason="shutdown").inc()
        return True

    def _io_loop(self, stop: threading.Event, links: list[_BrokerLink], pub: zmq.Socket) -> None:
        poller = zmq.Poller()
        for link in links:
            poller.register(link.sock, zmq.POLLIN)
            self._send_heartbeat(link, self.cfg.capacity)
        by_socket = {link.sock: link for link in links}
        next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S
        last_tick = time.monotonic()
        while not stop.is_set():
            tick = time.monotonic()
            if tick - last_tick > DEAD_AFTER_S:
                self._paused(last_tick, tick - last_tick)
            last_tick = self.io_tick = tick
            for sock, _event in poller.poll(POLL_MS):
                self._drain(by_socket[sock])
            self._publish_events(pub)
            finished = self.outbox.take_finished()
            now = time.monotonic()
            beat = now >= next_beat
            for link in links:
                done = finished.get(link.index, 0)
                link.outstanding = max(0, link.outstanding - done)
                if done or link.owed or beat:
                    self._send_heartbeat(link, done + link.owed)
                self._check_broker(link, now)
            if beat:
                next_beat = now + HEARTBEAT_INTERVAL_S
            if now >= self._next_forget:
                self._next_forget = now + FORGET_EVERY_S
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        """Cameras silent for worker.camera_forget_s lose their per-camera state and metric series here."""
        for camera in self.cameras.forget_idle(now):
            self._delay_floor.pop(camera, None)
            self._held_since.pop(camera, None)
            self._age_floor.pop(camera, None)  # the processing thread's; a silent camera's is not in use
            self.metrics.camera_gone(camera)
            log.info("camera %s sent nothing for %.0f s: forgotten", camera, self.cameras.forget_s)

    def _note_pause(self, start: float, gap_s: float) -> None:
        """A pause that began after the I/O loop's turn ``start`` (seen by either thread; handled once)."""
        with self._pause_lock:
            if start == self._pause_start:
                return
            self._pause_start = start
        log.warning("worker %s was stopped for %.1f s (longer than the %.1f s after which brokers declare a worker "
                    "dead): dropping the frames, events and tracks it held", self.worker_id, gap_s, DEAD_AFTER_S)
        self.abandon_all.set()

    def _paused(self, start: float, gap_s: float) -> None:
        """The I/O loop did not run for ``gap_s`` (> DEAD_AFTER_S): the brokers have declared this worker dead."""
        self._note_pause(start, gap_s)
        while True:
            try:
                self.outbox.events.get_nowait()
            except queue.Empty:
                break
            self.metrics.events_dropped.labels(reason="stale").inc()

    def _drain(self, link: _BrokerLink) -> None:
        while True:
            try:
                parts = link.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._on_message(parts, link)

    def _check_broker(self, link: _BrokerLink, now: float) -> None:
        if link.broker_id is not None and now - link.seen > DEAD_AFTER_S:
            log.warning("broker %s at %s silent for %.1f s; waiting for it to come back", link.broker_id,
                        link.endpoint, DEAD_AFTER_S)
            link.broker_id = None

    def _on_message(self, parts: list[bytes], link: _BrokerLink) -> None:
        if len(parts) != 1:
            self._protocol_error("bad_frames", f"expected 1 ZeroMQ frame, got {len(parts)}")
            return
        try:
            msg = decode(parts[0], self.max_bytes)
        except ProtocolError as exc:
            self._protocol_error(exc.reason, str(exc))
            return
        if isinstance(msg, Frame):
            link.outstanding += 1
            self._on_frame(msg, link.index)
        elif isinstance(msg, Heartbeat) and msg.role == "broker":
            self._on_broker_heartbeat(msg, link)
        else:
            self._protocol_error("unexpected_message", f"unexpected {type(msg).__name__} from the broker")

    def _on_broker_heartbeat(self, hb: Heartbeat, link: _BrokerLink) -> None:
        link.seen = time.monotonic()
        if hb.sender == link.broker_id:
            return
        if hb.sender == link.last_broker:  # the same broker heard again after a silence (a cut link, a pause):
            log.info("broker %s is back", hb.sender)  # it kept the credits it holds, so none are granted again
        elif link.last_broker is not None or link.hb_seq > 1:
            log.info("broker %s at %s (new incarnation): granting free capacity again", hb.sender, link.endpoint)
            self._send_heartbeat(link, max(0, self.cfg.capacity - link.outstanding))
        link.broker_id = link.last_broker = hb.sender

    def _held_up(self, camera: str, delay: float, received: float) -> bool:
        """Whether a frame's delay (capture -> received) is more than STALE_S over its camera's usual delay; a
        camera whose frames all looked held up for DELAY_RESET_S has its usual delay reset to this one."""
        floor = min(delay, self._delay_floor.get(camera, delay) + DELAY_FLOOR_RISE_S)
        held = delay - floor > STALE_S
        if not held:
            self._held_since.pop(camera, None)
        elif received - self._held_since.setdefault(camera, received) > DELAY_RESET_S:
            log.warning("camera %s: every frame looked held up for %.0f s (%.1f s over its usual delay): its usual "
                        "delay is reset (a frame dated ahead, or its clock stepped back)", camera, DELAY_RESET_S,
                        delay - floor)
            self._held_since.pop(camera)
            floor, held = delay, False
        self._delay_floor[camera] = floor
        return held

    def _drop(self, frame: Frame, link: int, reason: str, message: str, *args: object) -> None:
        """A frame not taken: counted (frames_dropped{camera, reason}), logged once a minute per reason, its credit
        handed back."""
        self.metrics.dropped.labels(camera=frame.camera_id, reason=reason).inc()
        self.rate_log.warning(reason, "dropping a frame of camera %s: " + message, frame.camera_id, *args)
        self.outbox.add_finished(1, link)

    def _admit(self, frame: Frame, link: int) -> bool:
        """Whether the worker keeps state for the frame's camera (at most worker.max_cameras at once)."""
        admission = self.cameras.admit(frame.camera_id, time.monotonic())
        if admission is Admission.REFUSED:
            self.metrics.cameras_refused.inc()
            self.rate_log.warning("too_many_cameras", "refusing frames of camera %s: this worker holds %d cameras "
                                  "(worker.max_cameras)", frame.camera_id, len(self.cameras))
            self.outbox.add_finished(1, link)
            return False
        if admission is Admission.NEW:
            self.metrics.camera_seen(frame.camera_id)
        return True

    def _capture_ts(self, frame: Frame, received: float) -> float:
        """The frame's capture_ts within worker.capture_window_s of its receipt (clamped ones counted)."""
        capture = clamp_capture(frame.capture_ts, received, self.cfg.capture_window_s)
        if capture.clamped is not None:
            self.metrics.clamped.labels(direction=capture.clamped).inc()
            self.rate_log.warning("clamped_" + capture.clamped, "camera %s sent capture_ts %.3f, %.0f s %s its "
                                  "receipt: clamped to %.0f s (worker.capture_window_s)", frame.camera_id,
                                  frame.capture_ts, abs(frame.capture_ts - received),
                                  "after" if capture.clamped == "future" else "before", self.cfg.capture_window_s)
        return capture.ts

    def _on_frame(self, frame: Frame, link: int = 0) -> None:
        received = time.time()
        if not self._admit(frame, link):
            return
        self.metrics.frames_in.labels(camera=frame.camera_id).inc()
        self.metrics.stage.labels(stage="broker").observe(max(0.0, received - frame.send_ts))
        capture_ts = self._capture_ts(frame, received)
        if self._held_up(frame.camera_id, received - capture_ts, received):
            self._drop(frame, link, "stale", "held up %.1f s on its way (a pause of this worker?)",
                       received - capture_ts)
            return
        refusal = check_header(frame, self.cfg.max_frame_pixels)
        if refusal is not None:
            self._drop(frame, link, refusal.reason, "%s", refusal.message)
            return
        try:
            start = time.perf_counter()
            image = simplejpeg.decode_jpeg(frame.jpeg, colorspace="RGB")
            self.metrics.observe("decode", time.perf_counter() - start)
        except ValueError as exc:
            self._drop(frame, link, "bad_jpeg", "undecodable JPEG: %s", exc)
            return
        try:
            self.inbox.put_nowait(DecodedFrame.from_frame(frame, image, received, link, capture_ts))
        except queue.Full:
            self.metrics.dropped.labels(camera=frame.camera_id, reason="worker_full").inc()
            self.outbox.add_finished(1, link)
        self.metrics.queue_depth.labels(queue="worker_inbox").set(self.inbox.qsize())

    def _publish_events(self, pub: zmq.Socket) -> None:
        while True:
            try:
                event = self.outbox.events.get_nowait()
            except queue.Empty:
                return
            start = time.perf_counter()
            pub.send_multipart([event.camera.encode(), encode(event)])
            self.metrics.observe("publish", time.perf_counter() - start)
            self.metrics.published(event, time.time())

    def _send_heartbeat(self, link: _BrokerLink, credits: int) -> None:
        link.hb_seq += 1
        hb = Heartbeat(sender=self.worker_id, role="worker", seq=link.hb_seq, ts=time.time(), credits=credits,
                       cameras=self.served.claims(time.monotonic()), tracking=self.tracking)
        try:
            link.sock.send(encode(hb), zmq.NOBLOCK)
            link.owed = 0
        except zmq.Again:
            link.owed = credits  # not delivered: keep the grant for the next heartbeat

    def _protocol_error(self, reason: str, message: str) -> None:
        self.metrics.protocol_errors.labels(reason=reason).inc()
        self.rate_log.warning(reason, "dropped a bad message from the broker (%s): %s", reason, message)

    # ------------------------------------------------------------------------------------- processing thread
    def _next_batch(self, wait: bool = True) -> list[DecodedFrame] | None:
        """Up to max_batch frames, waiting at most max_wait_ms after the first; None means stop. While no frame
        comes, the processor's housekeeping runs every IDLE_S (tracks of silent cameras end). With ``wait``
        False (batches are in flight), only the frames queued now, possibly none."""
        if not wait:
            return self._queued()
        waiting_since = time.monotonic()
        while True:
            try:
                first = self.inbox.get(timeout=IDLE_S)
                break
            except queue.Empty:
                self._check_pause()
                self._hand_over(self._run(self.processor.idle, 0))
                self._note_tracking()
        self.load.idle(time.monotonic() - waiting_since)  # nothing in progress, no frame: the worker was idle
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000.0
        while len(batch) < self.cfg.max_batch:
            try:
                item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self.inbox.put(None)
                break
            batch.append(item)
        return batch

    def _queued(self) -> list[DecodedFrame] | None:
        """Up to max_batch frames queued now, without waiting; None means stop."""
        batch: list[DecodedFrame] = []
        while len(batch) < self.cfg.max_batch:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                if batch:
                    self.inbox.put(None)
                    break
                return None
            batch.append(item)
        return batch

    def _run(self, step, frames: int) -> list[TrackEvent] | None:
        """One processor call; None when it failed. A failure must not kill the worker: it is logged with its
        traceback at WARNING (once a minute at most) and the caller counts the frames as dropped."""
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - counted and logged with its traceback
            self._failed(frames, exc)
            return None

    def _failed(self, frames: int, exc: BaseException) -> None:
        self.rate_log.log(logging.WARNING, "processing_error", "processing %d frame(s) failed: %r", frames, exc,
                          exc_info=exc)

    def _check_pause(self) -> None:
        """Before any work: when the I/O loop has not turned for DEAD_AFTER_S (the process was stopped, and this
        thread woke first) or saw a pause, drop every camera's tracks without events."""
        tick = self.io_tick
        if time.monotonic() - tick > DEAD_AFTER_S:
            self._note_pause(tick, time.monotonic() - tick)
        if self.abandon_all.is_set():
            self.abandon_all.clear()
            self._abandon(None)

    def _behind(self, frames: list[DecodedFrame]) -> list[DecodedFrame]:
        """The frames, each with how far behind its camera's usual age the worker takes it up (``behind_s``)."""
        now, out = time.time(), []
        for item in frames:
            age = now - item.capture_ts
            floor = min(age, self._age_floor.get(item.camera, age) + AGE_FLOOR_RISE_S)
            floor = age if age - floor > AGE_STEP_S else floor
            self._age_floor[item.camera] = floor
            out.append(dataclasses.replace(item, behind_s=age - floor))
        return out

    def _fresh(self, batch: list[DecodedFrame]) -> list[DecodedFrame]:
        """The frames that did not wait STALE_S here; the others are dropped as stale, and their cameras' tracks
        abandoned (the camera may be tracked by another worker now)."""
        now = time.time()
        stale = {item.camera for item in batch if now - item.received_ts > STALE_S}
        if not stale:
            return batch
        for item in batch:
            if item.camera in stale:
                self.metrics.dropped.labels(camera=item.camera, reason="stale").inc()
        self._abandon(stale)
        return [item for item in batch if item.camera not in stale]

    def _abandon(self, cameras: set[str] | None) -> None:
        dropped = self._run(lambda: self.processor.abandon(cameras), 0)
        if dropped:
            log.warning("abandoned %d track(s) of %s without events (stale after a pause)", dropped,
                        "every camera" if cameras is None else ", ".join(sorted(cameras)))
        self._note_tracking()

    def _note_tracking(self) -> None:
        """What the next heartbeats say this worker is tracking (one reference swap: read by the I/O thread)."""
        tracking = self._run(self.processor.tracking, 0)
        self.tracking = tuple(sorted(tracking or ()))[:MAX_CAMERAS]

    def _hand_over(self, events: list[TrackEvent] | None) -> None:
        """Queue events for the I/O thread without ever blocking; a full outbox drops (and counts) the event."""
        for event in events or ():
            try:
                self.outbox.events.put_nowait(event)
            except queue.Full:
                self.metrics.events_dropped.labels(reason="outbox_full").inc()
                self.rate_log.warning("outbox_full", "event outbox full (%d): dropping events", OUTBOX_EVENTS)

    def _process_loop(self, stop: threading.Event) -> None:
        """Batches go through plan (here) -> detect (on the pool, several at once) -> finish (here, in order)."""
        pool = DetectionPool(self.cfg.detect_threads, f"{self.worker_id}-detect")
        try:
            while not stop.is_set():
                if pool.full:
                    for done in pool.ready(None):
                        self._finish(done)
                    continue
                batch = self._next_batch(wait=len(pool) == 0)
                if batch is None:
                    break
                if batch:
                    self._start(batch, pool)
                for done in pool.ready(0.0 if batch else POLL_S):
                    self._finish(done)
            for done in pool.drain():  # batches in progress when stop came
                self._finish(done)
        finally:
            pool.close()

    def _start(self, batch: list[DecodedFrame], pool: DetectionPool) -> None:
        """Plan a batch's fresh frames and hand their detection to the pool. A pause or stale frames abandon
        track state: the batches in flight are finished first (their cameras' state is abandoned after them)."""
        if self.abandon_all.is_set() or time.monotonic() - self.io_tick > DEAD_AFTER_S or self._has_stale(batch):
            for done in pool.drain():
                self._finish(done)
        self._check_pause()
        fresh = self._behind(self._fresh(batch))
        item = InFlight(batch, fresh, None, time.time())
        if not fresh:
            pool.submit(item, None)
            return
        planned = self._run(lambda: [self.processor.plan(fresh)], len(fresh))
        if planned is None:  # no futures: its frames are counted as processing errors when it is finished
            pool.submit(item, None)
            return
        item.plan = planned[0]
        pool.submit(item, lambda part: self.processor.detect(part, self.metrics))

    def _has_stale(self, batch: list[DecodedFrame]) -> bool:
        now = time.time()
        return any(now - item.received_ts > STALE_S for item in batch)

    def _finish(self, item: InFlight) -> None:
        """Events of a batch whose detection is over, the frames counted, their credits handed back."""
        fresh = item.fresh
        events = self._finished_events(item) if fresh else []
        stale = events is not None and time.time() - item.started > STALE_S  # paused while processing
        # one decision for the event log and the live stream: what is not published is not logged either
        self._run(lambda: self.processor.commit(events is not None and not stale), 0)
        if stale:
            self.metrics.events_dropped.labels(reason="stale").inc(len(events))
            events = []
            self._abandon({frame.camera for frame in fresh})
        self._note_tracking()
        self._hand_over(events)
        for frame in fresh:
            if events is None:
                self.metrics.dropped.labels(camera=frame.camera, reason="processing_error").inc()
            else:
                self.metrics.frames_out.labels(camera=frame.camera).inc()
        self.outbox.add_finished_frames(item.batch)
        self.metrics.queue_depth.labels(queue="worker_inbox").set(self.inbox.qsize())
        self.load.finished(frame.camera for frame in item.batch)

    def _finished_events(self, item: InFlight) -> list[TrackEvent] | None:
        """The processor's events for a batch; None when planning, detection or finishing failed."""
        if not item.futures:
            return None
        try:
            found = item.found()
        except Exception as exc:  # noqa: BLE001 - counted by the caller and logged with its traceback
            self._failed(len(item.fresh), exc)
            return None
        return self._run(lambda: self.processor.finish(item.plan, found, self.metrics), len(item.fresh))
