"""A hostile camera node against a real broker and worker (issue 24, the worker's frame path): a JPEG bomb, a frame
whose JPEG is not the size it declares, a capture time forged a day ahead and a flood of new camera ids. The worker
stays alive and small, counts every refusal, and the honest demo camera keeps being named. Then, unit-level: track
ids and epochs unique across restarts, the bound on cameras, future-dated events clamped by the store, one stale
decision for the event log and the live stream, and the model provider metric on the worker's registry."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pytest
import simplejpeg
import yaml
import zmq

from argusnet.commands.demo import enrol_demo_person
from gpu_worker.admission import Admission, CameraBook, check_header, clamp_capture
from gpu_worker.session_ids import SessionIds
from shared.protocol import Frame, TrackEvent, encode
from store import LocalStoreConfig
from store.codec import MAX_FUTURE_S
from store.types import EventQuery, EventRecord
from tests.processes import Cluster, total, wait_until

MAX_CAMERAS = 12
FORGET_S = 3.0
FLOOD = 30  # new camera ids, far over MAX_CAMERAS
DAY_S = 86_400.0
PERSON = "Eileen Collins"


# ---------------------------------------------------------------------------------------------------- the rogue
def _jpeg(width: int, height: int) -> bytes:
    return simplejpeg.encode_jpeg(np.full((height, width, 1), 128, np.uint8), quality=50, colorspace="GRAY")


@dataclass
class Rogue:
    """A camera node speaking the wire protocol as it pleases: one DEALER per camera id it poses as."""

    frontend: str
    ctx: zmq.Context = field(default_factory=zmq.Context)
    socks: dict[str, zmq.Socket] = field(default_factory=dict)
    seq: int = 0

    def send(self, camera: str, jpeg: bytes, width: int, height: int, capture_ts: float | None = None) -> None:
        sock = self.socks.get(camera)
        if sock is None:
            sock = self.socks[camera] = self.ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.ROUTING_ID, b"cam:" + camera.encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.frontend)
        now = time.time()
        self.seq += 1
        sock.send(encode(Frame(camera_id=camera, seq=self.seq, capture_ts=now if capture_ts is None else capture_ts,
                               send_ts=now, width=width, height=height, jpeg=jpeg)), zmq.NOBLOCK)

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close(0)
        self.ctx.term()


def _attack(rogue: Rogue, seconds: float) -> None:
    """Bombs (16384x16384, 3 MB encoded) every second, a frame declaring another size than its JPEG twice a second,
    a camera whose first frame is dated a day ahead and the rest honestly (5 fps), and FLOOD new camera ids during
    the first 3 s."""
    bomb, small = _jpeg(16384, 16384), _jpeg(160, 120)
    start = time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        if tick % 10 == 0:
            rogue.send("rogue-bomb", bomb, 16384, 16384)
        if tick % 2 == 0:
            rogue.send("rogue-time", small, 160, 120, capture_ts=time.time() + DAY_S if tick == 0 else None)
        if tick % 5 == 0:
            rogue.send("rogue-size", small, 640, 480)
        if tick < 30 and tick % 10 == 5:
            for i in range(FLOOD):
                rogue.send(f"flood-{i:03d}", small, 160, 120)
        tick += 1
        time.sleep(0.1)


def _peak_rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _named_after(jsonl, since: float) -> bool:
    if not jsonl.exists():
        return False
    events = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    return any(e["type"] == "track_identified" and e["camera"] == "door" and e["name"] == PERSON
               and e["capture_ts"] >= since for e in events)


def _cameras(metrics: dict) -> set[str]:
    return {dict(labels)["camera"] for labels in metrics.get("argusnet_frames_in_total", {})}


@pytest.fixture(scope="module")
def site(tmp_path_factory, engine):
    tmp = tmp_path_factory.mktemp("hostile")
    gallery = tmp / "gallery"
    enrol_demo_person(engine, LocalStoreConfig(path=gallery)).close()
    cluster = Cluster(tmp, gallery, {"worker": {"max_cameras": MAX_CAMERAS, "camera_forget_s": FORGET_S}})
    jsonl = tmp / "events.jsonl"
    try:
        cluster.broker()
        cluster.worker("w1")
        late = cluster.not_ready(["broker", "w1"])
        assert not late, late
        cluster.start("events", "events", "--jsonl", str(jsonl), metrics=False)
        cluster.camera("door", "demo", "--fps", "10")
        assert wait_until(lambda: total(cluster.metrics("w1"), "argusnet_frames_out_total", camera="door") > 10,
                          60, 0.2), cluster.log("w1")[-3000:]
        yield cluster, jsonl
    finally:
        cluster.close()


# ---------------------------------------------------------------------------------------------------- real processes
def test_a_rogue_camera_cannot_take_the_worker_down_and_the_honest_camera_keeps_being_named(site):
    cluster, jsonl = site
    worker = cluster.procs["w1"]
    peak_before = _peak_rss_mb(worker.pid)
    attack_start = time.time()
    rogue = Rogue(cluster.endpoint("frontend"))
    try:
        _attack(rogue, 12.0)
        during = cluster.metrics("w1")
    finally:
        rogue.close()
    assert worker.poll() is None, cluster.log("w1")[-3000:]
    dropped = "argusnet_frames_dropped_total"
    assert total(during, dropped, camera="rogue-bomb", reason="too_large") >= 5, cluster.log("w1")[-3000:]
    assert total(during, "argusnet_frames_out_total", camera="rogue-bomb") == 0
    assert _peak_rss_mb(worker.pid) - peak_before < 200, "a bomb was decoded (805 MB)"
    assert total(during, dropped, camera="rogue-size", reason="size_mismatch") >= 10
    assert total(during, "argusnet_frames_out_total", camera="rogue-size") == 0
    # the frame dated a day ahead was clamped; the camera's honest frames are processed again within seconds
    assert total(during, "argusnet_capture_ts_clamped_total", direction="future") >= 1
    assert total(during, "argusnet_frames_out_total", camera="rogue-time") >= 10, \
        total(during, dropped, camera="rogue-time", reason="stale")
    # the flood: refused over max_cameras, and forgotten (state and series) once silent
    assert total(during, "argusnet_cameras_refused_total") >= 1
    assert len(_cameras(during)) <= MAX_CAMERAS, sorted(_cameras(during))
    assert wait_until(lambda: not any(c.startswith("flood-") for c in _cameras(cluster.metrics("w1"))),
                      FORGET_S + 10.0, 0.2), sorted(_cameras(cluster.metrics("w1")))
    assert "door" in _cameras(cluster.metrics("w1"))
    assert wait_until(lambda: _named_after(jsonl, attack_start), 30.0, 0.5), "the honest camera is not named"
    assert worker.poll() is None


def test_the_worker_serves_the_model_provider_metric(site):
    cluster, _ = site
    info = cluster.metrics("w1").get("argusnet_model_provider_info", {})
    assert info and all(v == 1.0 for v in info.values()), info
    assert {dict(labels)["provider"] for labels in info} == {"cpu"}  # this machine has no GPU


def test_a_worker_that_requires_cuda_and_gets_the_cpu_exits_with_one_line(tmp_path, cli):
    config = tmp_path / "argusnet.yaml"
    config.write_text(yaml.safe_dump({"runtime": {"providers": ["cuda", "cpu"], "require_provider": "cuda"}}))
    result = cli("--config", config, "worker", "--id", "w-cuda", "--metrics-port", "0", timeout=120)
    assert result.code != 0
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("argusnet: error:")]
    assert len(errors) == 1 and "runs on cpu" in errors[0] and "require_provider is cuda" in errors[0], result.err


def test_the_provider_metric_says_cpu_when_cuda_was_required(tmp_path):
    from onnx import TensorProto, helper
    from prometheus_client import CollectorRegistry

    from gpu_worker.runtime import ProviderInfo, RuntimeConfig, create_session
    from shared.errors import ModelError

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    registry = CollectorRegistry()
    registry.register(ProviderInfo())
    with pytest.raises(ModelError, match="runs on cpu"):
        create_session(model.SerializeToString(), RuntimeConfig(require_provider="cuda"), "identity-test")
    assert registry.get_sample_value("argusnet_model_provider_info",
                                     {"model": "identity-test", "provider": "cpu"}) == 1.0


# ---------------------------------------------------------------------------------------------------- unit level
def test_frame_header_checks_and_capture_clamp():
    small = _jpeg(160, 120)
    ok = Frame(camera_id="c", seq=0, capture_ts=1.0, send_ts=1.0, width=160, height=120, jpeg=small)
    assert check_header(ok, 160 * 120) is None
    assert check_header(ok, 160 * 120 - 1).reason == "too_large"
    lying = Frame(camera_id="c", seq=0, capture_ts=1.0, send_ts=1.0, width=120, height=160, jpeg=small)
    assert check_header(lying, 10**6).reason == "size_mismatch"
    junk = Frame(camera_id="c", seq=0, capture_ts=1.0, send_ts=1.0, width=1, height=1, jpeg=b"\xff\xd8junk")
    assert check_header(junk, 10**6).reason == "bad_jpeg"
    assert clamp_capture(1000.0 + DAY_S, 1000.0, 30.0).ts == 1030.0
    assert clamp_capture(1000.0 - DAY_S, 1000.0, 30.0).clamped == "past"
    assert clamp_capture(1010.0, 1000.0, 30.0).clamped is None


def test_track_ids_and_epochs_are_unique_across_sessions_and_restarts():
    frozen = 1_700_000_000_123_456_000  # a clock that does not move: sessions within one microsecond
    first = SessionIds(lambda: frozen)
    ids = [first.next() for _ in range(1000)]
    assert ids == sorted(set(ids)) and ids[0] == frozen // 1000
    restarted = SessionIds(lambda: frozen + 2_000_000)  # a restart 2 ms later: a new process, a new allocator
    assert restarted.next() > ids[-1]
    real = SessionIds()
    now_ids = [real.next() for _ in range(3)]
    assert now_ids == sorted(set(now_ids)) and all(isinstance(i, int) and 0 <= i < 2**53 for i in now_ids)


def test_camera_book_caps_and_forgets():
    book = CameraBook(limit=2, forget_s=5.0)
    assert book.admit("a", 0.0) is Admission.NEW and book.admit("b", 1.0) is Admission.NEW
    assert book.admit("c", 1.0) is Admission.REFUSED and book.admit("a", 4.0) is Admission.KNOWN
    assert book.forget_idle(6.5) == ["b"] and len(book) == 1
    assert book.admit("c", 6.5) is Admission.NEW


def test_the_store_clamps_events_dated_in_the_future(engine, tmp_path):
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / "gallery"))
    now = time.time()
    event = TrackEvent(type="track_started", camera="cam", track=1, name=None, similarity=None, margin=None,
                       ts=now + DAY_S, capture_ts=now + DAY_S, box=None, time_to_name_ms=None, duration_s=None,
                       visitor=False)
    try:
        store.events.append([EventRecord(event)])
        logged = store.events.query(EventQuery(camera="cam"))
        assert len(logged) == 1 and logged[0].event.capture_ts <= time.time() + MAX_FUTURE_S
        assert store.events.expire(time.time() + MAX_FUTURE_S + 1) == 1  # it expires like any other
    finally:
        store.close()


def test_a_batch_judged_stale_reaches_neither_the_event_log_nor_the_live_stream(engine, tmp_path):
    """A pause while a batch is finished (the processing thread held up past STALE_S): its events are dropped,
    and they are not in the event log either; every event of the camera that was published is logged, and no
    other."""
    from prometheus_client import CollectorRegistry

    from gpu_worker.service import STALE_S
    from gpu_worker.tracked import TrackedProcessor
    from tests.test_worker_service import Harness

    cfg = engine.cfg.model_copy(update={"tracking": engine.cfg.tracking.model_copy(update={"camera_idle_s": 1.0})})
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / "gallery"))
    processor = TrackedProcessor(engine, store, cfg, worker="w1")
    finish, paused = processor.finish, threading.Event()

    def held_up_once(*args, **kwargs):  # the batch that starts the first track is held up as by a SIGSTOP
        events = finish(*args, **kwargs)
        if not paused.is_set() and any(e.type == "track_started" for e in events):
            paused.set()
            time.sleep(STALE_S + 0.5)
        return events

    processor.finish = held_up_once
    registry = CollectorRegistry()
    harness = Harness(processor, registry)
    try:
        published: list[TrackEvent] = []
        for i in range(40):  # 4 s of the demo walk, the face in view throughout
            harness.send(2.0 + i / 10)
            published += harness.events(0.1)
        assert wait_until(lambda: published.extend(harness.events(0.2)) or
                          any(e.type == "track_ended" for e in published), 10.0, 0.0)
        published += harness.events(0.5)
    finally:
        harness.close()
    try:
        assert paused.is_set()
        assert registry.get_sample_value("argusnet_events_dropped_total", {"reason": "stale"}) >= 1
        logged = store.events.query(EventQuery(camera="cam"))
        assert sorted((e.event.type, e.event.track) for e in logged) == \
            sorted((e.type, e.track) for e in published), (logged, published)
    finally:
        store.close()
