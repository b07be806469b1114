"""The worker service in-process against real ZeroMQ sockets on loopback (a ROUTER standing where the broker's
backend is, a SUB where its events proxy is): a silent camera's tracks end on time, a failing batch is logged
with its traceback, the event outbox is bounded and counts what it drops."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import simplejpeg
import zmq
from prometheus_client import CollectorRegistry

from argusnet.commands.demo import enrol_demo_person
from argusnet.launcher import free_port
from broker.config import BrokerConfig
from camera_node.demo import render
from gpu_worker import service as service_module
from gpu_worker.config import WorkerConfig
from gpu_worker.service import WorkerService
from gpu_worker.tracked import TrackedProcessor
from shared.protocol import Frame, ProtocolConfig, TrackEvent, decode, encode
from store.config import LocalStoreConfig
from store.types import EventQuery

IDLE_S = 1.0


class Harness:
    """A worker service on its own thread with a ROUTER (broker backend) and SUB (events) on loopback."""

    def __init__(self, processor, registry: CollectorRegistry) -> None:
        self.ctx = zmq.Context()
        backend, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.bind(backend)
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.bind(events)
        self.service = WorkerService("w1", processor, WorkerConfig(), BrokerConfig(backend=backend, events_in=events),
                                     ProtocolConfig(), registry, self.ctx)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()
        identity, _ = self.router.recv_multipart()  # the worker's first heartbeat
        self.identity = identity
        self.seq = 0

    def send(self, t: float) -> None:
        image, _ = render(t)
        now = time.time()
        frame = Frame(camera_id="cam", seq=self.seq, capture_ts=now, send_ts=now, width=image.shape[1],
                      height=image.shape[0], jpeg=simplejpeg.encode_jpeg(image, quality=85, colorspace="RGB"))
        self.seq += 1
        self.router.send_multipart([self.identity, encode(frame)])

    def events(self, timeout: float) -> list[TrackEvent]:
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sub.poll(50):
                _, body = self.sub.recv_multipart()
                out.append(decode(body, 1 << 20))
            else:
                while self.router.poll(0):  # heartbeats: read and ignore
                    self.router.recv_multipart()
        return out

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.router.close(0)
        self.sub.close(0)
        self.ctx.term()


@pytest.fixture
def tracked(engine, tmp_path):
    cfg = engine.cfg.model_copy(update={"tracking": engine.cfg.tracking.model_copy(update={"camera_idle_s": IDLE_S})})
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / "gallery"))
    yield TrackedProcessor(engine, store, cfg, worker="w1"), store
    store.close()


def test_tracks_of_a_silent_camera_end_within_camera_idle_plus_one_second(tracked):
    processor, store = tracked
    registry = CollectorRegistry()
    harness = Harness(processor, registry)
    try:
        seen: list[TrackEvent] = []
        for i in range(25):  # 2.5 s of the demo walk at 10 fps, the face in view throughout
            harness.send(2.0 + i / 10)
            seen += harness.events(0.1)
        last_frame = time.monotonic()
        assert any(e.type == "track_started" for e in seen), seen
        ended: list[float] = []
        deadline = time.monotonic() + IDLE_S + 3.0
        while time.monotonic() < deadline and not ended:
            ended += [time.monotonic() for e in harness.events(0.1) if e.type == "track_ended"]
        assert ended, "a silent camera's track never ended"
        assert ended[0] - last_frame <= IDLE_S + 1.0, ended[0] - last_frame
        harness.events(0.5)  # the last event's metrics are updated just after it was sent
        assert_latency_counts_only_started_and_identified(registry)
        logged = store.events.query(EventQuery(camera="cam"))
        assert logged[0].event.type == "track_ended" and logged[0].crop is not None  # with its best face
        assert store.media.get_crop(logged[0].crop)[:3] == b"\xff\xd8\xff"
        assert store.live.alive(camera="cam") == []
    finally:
        harness.close()


def assert_latency_counts_only_started_and_identified(registry: CollectorRegistry) -> None:
    """End-to-end latency is observed for track_started / track_identified only; track_ended goes to the
    track-lost delay histogram (its capture_ts is the track's last frame, so it would read as seconds of latency)."""
    def count(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    ended = count("argusnet_events_total", type="track_ended")
    assert ended >= 1
    named = count("argusnet_events_total", type="track_started") + count("argusnet_events_total",
                                                                         type="track_identified")
    assert count("argusnet_end_to_end_latency_seconds_count") == named > 0
    assert count("argusnet_track_lost_delay_seconds_count") == ended
    assert count("argusnet_track_lost_delay_seconds_sum") >= IDLE_S * ended  # a face is given up after IDLE_S


def test_a_failing_batch_is_logged_with_its_traceback_and_counted(tracked, caplog):
    processor, store = tracked
    registry = CollectorRegistry()
    harness = Harness(processor, registry)
    try:
        store.persons.close()  # the store's gallery fails under the processor from now on
        processor._next_sync = 0.0
        with caplog.at_level(logging.WARNING, logger="gpu_worker.service"):
            harness.send(2.0)
            harness.events(1.5)
        failed = [r for r in caplog.records if "failed" in r.getMessage()]
        assert failed and failed[0].levelno == logging.WARNING and failed[0].exc_info is not None
        dropped = registry.get_sample_value("argusnet_frames_dropped_total",
                                            {"camera": "cam", "reason": "processing_error"})
        assert dropped is not None and dropped >= 1
    finally:
        harness.close()


def test_the_event_outbox_is_bounded_and_counts_what_it_drops(monkeypatch, tracked):
    processor, _ = tracked
    monkeypatch.setattr(service_module, "OUTBOX_EVENTS", 3)
    registry = CollectorRegistry()
    service = WorkerService("w2", processor, WorkerConfig(), BrokerConfig(), ProtocolConfig(), registry)
    event = TrackEvent(type="track_started", camera="cam", track=1, name=None, similarity=None, margin=None,
                       ts=1.0, capture_ts=1.0, box=None, time_to_name_ms=None, duration_s=None, visitor=False)
    service._hand_over([event] * 5)  # nothing publishes: the I/O thread is not running
    assert service.outbox.events.qsize() == 3
    assert registry.get_sample_value("argusnet_events_dropped_total", {"reason": "outbox_full"}) == 2
