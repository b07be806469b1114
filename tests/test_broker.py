"""Tests of the broker: pure routing / queue / credit logic, then the real broker on 127.0.0.1 (ephemeral ports,
run in a thread) with real DEALER sockets speaking the real protocol as cameras and workers, the events proxy,
10,000 bad messages, CurveZMQ and the key files."""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import msgpack
import pytest
import zmq
from prometheus_client import CollectorRegistry

from argusnet.config import ArgusConfig
from broker.config import BrokerConfig
from broker.main import broker_config
from broker.queues import Credits, FrameQueues, Queued
from broker.routing import Move, Routing, Seen
from broker.server import Broker
from shared.metrics import AUTH_REFUSED_REASONS
from shared.errors import ConfigError, InputError, ProtocolError
from shared.keys import (
    SecurityConfig,
    generate_keys,
    load_public_key,
    load_public_keys,
    load_secret_key,
)
from shared.protocol import Frame, Heartbeat, ProtocolConfig, TrackEvent, decode, encode
from shared.zmq_defaults import HEARTBEAT_INTERVAL_S, configure

ANY = "tcp://127.0.0.1:*"
JPEG = b"\xff\xd8 not really a jpeg \xff\xd9"


# ================================================================================================ pure logic
def test_routing_assigns_new_cameras_to_the_least_loaded_worker() -> None:
    r = Routing(dead_after_s=1.5)
    assert r.camera_seen("c0", 0.0) == (Seen.NEW, [])  # no worker yet: unassigned
    assert r.worker_seen("w1", 1, 0.0) == (Seen.NEW, [Move("c0", None, "w1")])
    r.worker_seen("w2", 1, 0.0)
    assert r.load() == {"w1": 1, "w2": 0}  # difference 1: nothing moves
    for cam in ("c1", "c2", "c3"):
        r.camera_seen(cam, 0.0)
    assert r.load() == {"w1": 2, "w2": 2}
    assert r.worker_of("c1") == "w2" and r.worker_of("c2") == "w1"


def test_routing_dead_worker_cameras_move_and_join_rebalances() -> None:
    r = Routing(dead_after_s=1.5)
    r.worker_seen("w1", 1, 0.0)
    for i in range(5):
        r.camera_seen(f"c{i}", 0.0)
    r.worker_seen("w2", 1, 0.0)  # join: w1 had 5, moves until the counts differ by at most one
    assert sorted(r.load().values()) == [2, 3]
    moved_to_w2 = set(r.cameras_of("w2"))
    for i in range(5):
        r.camera_seen(f"c{i}", 1.0)
    r.worker_seen("w1", 2, 1.0)
    expired = r.expire(2.0)  # w2 silent for 2 s > 1.5 s
    assert expired.dead_workers == ("w2",) and expired.gone_cameras == ()
    assert {m.camera for m in expired.moves} == moved_to_w2
    assert all(m.old == "w2" and m.new == "w1" for m in expired.moves)
    assert r.load() == {"w1": 5} and r.live_workers() == ["w1"]


def test_routing_revival_restart_and_forgotten_cameras() -> None:
    r = Routing(dead_after_s=1.5)
    r.worker_seen("w1", 5, 0.0)
    r.camera_seen("c0", 0.0, heartbeat_seq=3)
    assert r.camera_seen("c0", 0.1, heartbeat_seq=4)[0] is Seen.KNOWN
    assert r.camera_seen("c0", 0.2, heartbeat_seq=0)[0] is Seen.RESTARTED
    assert r.worker_seen("w1", 6, 0.3)[0] is Seen.KNOWN
    assert r.worker_seen("w1", 1, 0.4)[0] is Seen.RESTARTED
    expired = r.expire(10.0)
    assert expired.dead_workers == ("w1",) and expired.gone_cameras == ("c0",)
    assert expired.moves == (Move("c0", "w1", None),)
    assert r.worker_seen("w1", 2, 11.0)[0] is Seen.REVIVED  # same process: its sequence continues
    assert r.cameras() == [] and r.worker_of("c0") is None


def test_a_revived_worker_never_gets_its_old_cameras_straight_back() -> None:
    r = Routing(dead_after_s=1.5)
    r.worker_seen("w1", 1, 0.0)
    r.worker_seen("w2", 1, 0.0)
    for i in range(4):
        r.camera_seen(f"c{i}", 0.0)
    lost = set(r.cameras_of("w1"))
    assert len(lost) == 2 and r.load() == {"w1": 2, "w2": 2}
    for t in (1.0, 2.0, 3.0):  # w1 is paused: only w2 and the cameras are heard
        r.worker_seen("w2", int(t) + 1, t)
        for i in range(4):
            r.camera_seen(f"c{i}", t)
    assert r.expire(3.0).dead_workers == ("w1",) and r.load() == {"w2": 4}
    seen, moves = r.worker_seen("w1", 2, 3.5)  # its sequence continues: the same process, revived
    assert seen is Seen.REVIVED and r.load() == {"w1": 2, "w2": 2}
    assert {m.camera for m in moves}.isdisjoint(lost), "a camera went straight back to the revived worker"
    assert set(r.cameras_of("w2")) == lost  # the moved cameras stay where their tracks are


def test_no_live_worker_leaves_cameras_unassigned() -> None:
    r = Routing(dead_after_s=1.5)
    r.worker_seen("w1", 1, 0.0)
    r.camera_seen("c0", 0.0)
    r.camera_seen("c0", 2.0)
    expired = r.expire(2.0)
    assert expired.moves == (Move("c0", "w1", None),) and r.worker_of("c0") is None
    with pytest.raises(ValueError, match="dead_after_s"):
        Routing(dead_after_s=0)


def _item(camera: str, n: int, epoch: int | None = None) -> Queued:
    return Queued(camera, f"{camera}/{n}", float(n), epoch)


def test_frame_queues_drop_oldest_and_round_robin() -> None:
    q = FrameQueues(maxlen=2)
    assert q.push(_item("a", 0), "w") is None
    assert q.push(_item("a", 1), "w") is None
    assert q.push(_item("a", 2), "w").payload == "a/0"  # full: the oldest goes
    for n in range(3):
        q.push(_item("b", n), "w")  # b/0 displaced
    q.push(_item("c", 0), "w")
    order = []
    while (item := q.pop("w")) is not None:
        order.append(item.payload)
    assert order == ["a/1", "b/1", "c/0", "a/2", "b/2"]
    assert q.pop("w") is None and not q.has_work("w") and q.depth("a") == 0


def test_frame_queues_unpop_and_reassign() -> None:
    q = FrameQueues(maxlen=4)
    for cam in ("a", "b"):
        for n in range(2):
            q.push(_item(cam, n), "w1")
    first = q.pop("w1")
    q.unpop(first)  # could not be sent: same frame, same turn
    assert q.pop("w1") is first
    assert q.reassign("b", "w2") == [] and q.pop("w2").payload == "b/0"
    assert [i.payload for i in q.reassign("a", None)] == ["a/1"]
    assert q.pop("w1") is None and q.depth("b") == 1
    with pytest.raises(ValueError, match="maxlen"):
        FrameQueues(0)


def test_credits_camera_window_epochs_and_worker_grants() -> None:
    c = Credits(camera_window=3)
    c.open_camera("a")
    assert c.take_grants() == [("a", 3)] and c.take_grants() == []
    epochs = [c.frame_arrived("a") for _ in range(4)]
    assert epochs == [1, 1, 1, None]  # the fourth frame came without a credit
    for e in epochs:
        c.frame_left(Queued("a", b"", 0.0, e))
    assert c.take_grants() == [("a", 3)]  # one back per credited frame only
    c.return_grant("a", 3)
    assert c.take_grants(deferred=False) == [] and c.take_grants(deferred=True) == [("a", 3)]
    c.open_camera("a")  # restarted: old frames earn nothing, a fresh window is owed
    c.frame_left(Queued("a", b"", 0.0, 1))
    assert c.take_grants() == [("a", 3)]
    c.worker_grant("w", 2)
    c.use_worker_credit("w")
    c.worker_grant("w", 1)
    assert c.worker_credits("w") == 2
    c.worker_grant("w", 5, reset=True)
    assert c.worker_credits("w") == 5
    with pytest.raises(ValueError, match="no credit"):
        c.use_worker_credit("other")


# ================================================================================================ peers
def frame_bytes(camera: str, seq: int, size: int = len(JPEG)) -> bytes:
    jpeg = JPEG if size == len(JPEG) else bytes(size)
    now = time.time()
    return encode(Frame(camera_id=camera, seq=seq, capture_ts=now, send_ts=now, width=64, height=48, jpeg=jpeg))


class Peer:
    """A camera or worker made of a real DEALER socket speaking the real protocol, driven by ``pump``."""

    def __init__(self, ctx: zmq.Context, endpoint: str, role: str, name: str,
                 curve: tuple[bytes, bytes, bytes] | None = None) -> None:
        self.role, self.name = role, name
        self.sock = configure(ctx.socket(zmq.DEALER))
        self.sock.setsockopt(zmq.ROUTING_ID, (b"cam:" if role == "camera" else b"wrk:") + name.encode())
        if curve is not None:
            self.sock.curve_publickey, self.sock.curve_secretkey, self.sock.curve_serverkey = curve
        self.sock.connect(endpoint)
        self.seq = 0
        self.sent = 0  # camera: frames sent so far
        self.unsent = 0  # heartbeats that could not be queued
        self.beating = True
        self.next_beat = 0.0
        self.frames: list[Frame] = []
        self.broker_beats: list[Heartbeat] = []
        self.auto_credit = False  # worker: grant one credit back per frame received, like a real worker
        self.claims: tuple[str, ...] = ()  # worker: the cameras its heartbeats say it served lately
        self.tracking: tuple[str, ...] = ()  # worker: ... and those it holds a live track of

    @property
    def credits(self) -> int:
        """Camera: credits granted by the broker so far."""
        return sum(hb.credits for hb in self.broker_beats)

    def beat(self, credits: int = 0) -> None:
        self.seq += 1
        cameras = (self.name,) if self.role == "camera" else self.claims
        try:
            self.sock.send(encode(Heartbeat(self.name, self.role, self.seq, time.time(), credits, cameras,
                                            self.tracking)), zmq.NOBLOCK)
        except zmq.Again:  # not connected (e.g. refused by CURVE): a real node would retry at its next beat
            self.unsent += 1
        self.next_beat = time.monotonic() + HEARTBEAT_INTERVAL_S

    def pump(self) -> None:
        got = 0
        while self.sock.poll(0):
            msg = decode(self.sock.recv(), 1 << 24)
            if isinstance(msg, Frame):
                self.frames.append(msg)
                got += 1
            else:
                assert isinstance(msg, Heartbeat) and msg.role == "broker"
                self.broker_beats.append(msg)
        if self.auto_credit and got:
            self.beat(got)
        elif self.beating and time.monotonic() >= self.next_beat:
            self.beat(0)

    def close(self) -> None:
        self.sock.close(0)


def run_until(cond: Callable[[], bool], peers: list[Peer], timeout: float = 5.0) -> bool:
    """Pump every peer (heartbeats, receiving) until ``cond()`` holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        for peer in peers:
            peer.pump()
        if cond():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)


def send_frames(camera: Peer, n: int, peers: list[Peer], timeout: float = 5.0) -> None:
    """Send ``n`` frames as a camera does: one per credit held, waiting for credits when it has none."""
    for _ in range(n):
        assert run_until(lambda: camera.credits > camera.sent, peers, timeout), f"{camera.name}: no credit"
        camera.sock.send(frame_bytes(camera.name, camera.sent))
        camera.sent += 1


class Harness:
    """A broker running in a thread, its registry, and the peers a test creates."""

    def __init__(self, security: SecurityConfig | None = None, max_bytes: int = 1 << 20, **cfg: Any) -> None:
        settings = dict(frontend=ANY, backend=ANY, events_in=ANY, events_out=ANY, metrics_port=0, camera_queue=4)
        settings.update(cfg)
        self.registry = CollectorRegistry()
        self.broker = Broker(BrokerConfig(**settings), security or SecurityConfig(),
                             ProtocolConfig(max_message_bytes=max_bytes), self.registry)
        self.ctx = zmq.Context()
        self.peers: list[Peer] = []
        self.sockets: list[zmq.Socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.broker.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def camera(self, name: str, hello: bool = True, **kw: Any) -> Peer:
        peer = Peer(self.ctx, self.broker.endpoints["frontend"], "camera", name, **kw)
        self.peers.append(peer)
        if hello:
            peer.beat()
        return peer

    def worker(self, name: str, credits: int = 0, auto_credit: bool = True, **kw: Any) -> Peer:
        peer = Peer(self.ctx, self.broker.endpoints["backend"], "worker", name, **kw)
        peer.auto_credit = auto_credit
        peer.beat(credits)
        self.peers.append(peer)
        return peer

    def socket(self, kind: int) -> zmq.Socket:
        """A plain socket of the test's context, closed with the harness."""
        sock = configure(self.ctx.socket(kind), hwm=1000)
        self.sockets.append(sock)
        return sock

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def until(self, cond: Callable[[], bool], timeout: float = 5.0) -> bool:
        return run_until(cond, self.peers, timeout)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()
        self.broker.close()
        for peer in self.peers:
            peer.close()
        for sock in self.sockets:
            sock.close(0)
        self.ctx.term()


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**kw: Any) -> Harness:
        made.append(Harness(**kw))
        return made[-1]

    yield make
    for h in made:
        h.close()


def by_camera(*workers: Peer) -> dict[str, set[str]]:
    """camera id -> names of the workers that received its frames."""
    seen: dict[str, set[str]] = {}
    for w in workers:
        for f in w.frames:
            seen.setdefault(f.camera_id, set()).add(w.name)
    return seen


# ================================================================================================ routing
def test_frames_of_a_camera_always_reach_the_same_worker_and_workers_share(harness) -> None:
    h = harness()
    w1, w2 = h.worker("w1", credits=4), h.worker("w2", credits=4)
    cams = [h.camera(f"cam{i}") for i in range(4)]
    for _ in range(3):
        for cam in cams:
            send_frames(cam, 4, h.peers)
    assert h.until(lambda: len(w1.frames) + len(w2.frames) == 48)
    owners = by_camera(w1, w2)
    assert all(len(names) == 1 for names in owners.values()) and len(owners) == 4
    assert sum(1 for names in owners.values() if names == {"w1"}) == 2  # shared two and two
    for w in (w1, w2):
        for cam in {f.camera_id for f in w.frames}:
            assert [f.seq for f in w.frames if f.camera_id == cam] == list(range(12))  # in order, none lost
    assert h.metric("argusnet_frames_out_total", camera="cam0") == 12
    assert h.metric("argusnet_workers_alive") == 2 or h.until(lambda: h.metric("argusnet_workers_alive") == 2)


def test_dead_worker_loses_its_cameras_within_3_s_and_frames_continue(harness) -> None:
    h = harness()
    w1, w2 = h.worker("w1", credits=4), h.worker("w2", credits=4)
    cams = [h.camera(f"cam{i}") for i in range(4)]
    for cam in cams:
        send_frames(cam, 2, h.peers)
    assert h.until(lambda: len(w1.frames) + len(w2.frames) == 8)
    orphaned = {f.camera_id for f in w2.frames}
    assert len(orphaned) == 2
    w2.close()
    h.peers.remove(w2)
    killed = time.monotonic()
    before = len(w1.frames)

    def moved() -> bool:  # cameras keep sending (one frame per credit) until w1 gets frames of every orphan
        for cam in cams:
            if cam.credits > cam.sent:
                cam.sock.send(frame_bytes(cam.name, cam.sent))
                cam.sent += 1
        return orphaned <= {f.camera_id for f in w1.frames[before:]}

    assert h.until(moved, timeout=3.0), f"cameras {orphaned} not moved within 3 s of the kill"
    assert time.monotonic() - killed < 3.0
    assert h.metric("argusnet_workers_alive") == 1 or h.until(lambda: h.metric("argusnet_workers_alive") == 1)
    assert h.broker.routing.load() == {"w1": 4}


def test_a_joining_worker_takes_over_cameras_from_the_loaded_one(harness) -> None:
    h = harness()
    w1 = h.worker("w1", credits=4)
    cams = [h.camera(f"cam{i}") for i in range(4)]
    for cam in cams:
        send_frames(cam, 1, h.peers)
    assert h.until(lambda: len(w1.frames) == 4)
    assert by_camera(w1) == {f"cam{i}": {"w1"} for i in range(4)}
    w2 = h.worker("w2", credits=4)
    assert h.until(lambda: h.broker.routing.load() == {"w1": 2, "w2": 2})
    for cam in cams:
        send_frames(cam, 3, h.peers)
    assert h.until(lambda: len(w1.frames) + len(w2.frames) == 16)
    moved = {f.camera_id for f in w2.frames}
    assert len(moved) == 2
    assert all(f.camera_id not in moved for f in w1.frames[4:])  # after the move, only w2 gets them


# ================================================================================================ credits, queues
def test_camera_gets_its_window_and_one_credit_back_per_frame(harness) -> None:
    h = harness(camera_credits=4, camera_queue=4)
    w = h.worker("w1", credits=0, auto_credit=False)
    cam = h.camera("cam0")
    assert h.until(lambda: cam.credits == 4)
    assert not h.until(lambda: cam.credits > 4, timeout=0.7)  # heartbeats carry no extra credit
    for seq in range(4):
        cam.sock.send(frame_bytes("cam0", seq))
    assert h.until(lambda: h.metric("argusnet_frames_in_total", camera="cam0") == 4)
    assert not h.until(lambda: cam.credits > 4, timeout=0.3)  # queued, not dispatched: nothing back yet
    w.beat(3)
    assert h.until(lambda: len(w.frames) == 3 and cam.credits == 7)
    w.beat(5)
    assert h.until(lambda: len(w.frames) == 4 and cam.credits == 8)
    assert [f.seq for f in w.frames] == [0, 1, 2, 3]
    assert h.metric("argusnet_stage_latency_seconds_count", stage="broker") == 4


def test_full_queue_drops_the_oldest_and_returns_its_credit(harness) -> None:
    h = harness(camera_credits=4, camera_queue=2)
    w = h.worker("w1", credits=0, auto_credit=False)
    cam = h.camera("cam0")
    assert h.until(lambda: cam.credits == 4)
    for seq in range(4):
        cam.sock.send(frame_bytes("cam0", seq))
    assert h.until(lambda: cam.credits == 6)
    assert h.metric("argusnet_frames_dropped_total", camera="cam0", reason="queue_full") == 2
    w.beat(4)
    assert h.until(lambda: len(w.frames) == 2 and cam.credits == 8)
    assert [f.seq for f in w.frames] == [2, 3]  # the two newest survived


def test_frames_without_a_live_worker_are_dropped_and_counted(harness) -> None:
    h = harness(camera_credits=3)
    cam = h.camera("cam0")
    send_frames(cam, 10, h.peers)
    assert h.until(lambda: h.metric("argusnet_frames_dropped_total", camera="cam0", reason="no_worker") == 10)
    assert h.until(lambda: cam.credits == 13)  # window + one back per dropped frame
    assert h.metric("argusnet_frames_out_total", camera="cam0") == 0


def test_worker_serves_its_cameras_round_robin(harness) -> None:
    h = harness(camera_credits=4, camera_queue=4)
    w = h.worker("w1", credits=0, auto_credit=False)
    cams = [h.camera(f"cam{i}") for i in range(3)]
    assert h.until(lambda: all(c.credits == 4 for c in cams))
    for seq in range(4):
        for c in cams:
            c.sock.send(frame_bytes(c.name, seq))
    assert h.until(lambda: sum(h.broker.queues.depth(c.name) for c in cams) == 12)
    w.beat(12)
    assert h.until(lambda: len(w.frames) == 12)
    rounds = [w.frames[i:i + 3] for i in range(0, 12, 3)]
    assert all(sorted(f.camera_id for f in r) == ["cam0", "cam1", "cam2"] for r in rounds)
    assert all({f.seq for f in r} == {k} for k, r in enumerate(rounds))


def test_restarted_camera_gets_a_fresh_window(harness) -> None:
    h = harness(camera_credits=2)
    cam = h.camera("cam0")
    cam.beat()
    assert h.until(lambda: cam.credits == 2)
    cam.seq = 0  # a new process: its heartbeat sequence starts again
    cam.beat()
    assert h.until(lambda: cam.credits == 4)


def test_broker_heartbeats_name_its_incarnation_and_the_cameras_of_a_worker(harness) -> None:
    h = harness()
    w = h.worker("w1", credits=1)
    cam = h.camera("cam0")
    assert h.until(lambda: any(hb.cameras == ("cam0",) for hb in w.broker_beats))
    assert {hb.sender for hb in w.broker_beats + cam.broker_beats} == {h.broker.incarnation}
    assert h.broker.incarnation.startswith("broker.")


# ================================================================================================ events proxy
def test_events_proxy_forwards_published_events_to_subscribers(harness) -> None:
    h = harness()
    pub = h.socket(zmq.PUB)
    pub.connect(h.broker.endpoints["events_in"])
    sub = h.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"cam0")
    sub.connect(h.broker.endpoints["events_out"])
    event = TrackEvent("track_started", "cam0", 1, None, None, None, 1.0, 1.0, None, None, 0.0, False)
    got = None
    deadline = time.monotonic() + 5
    while got is None and time.monotonic() < deadline:  # until the subscription has reached the publisher
        pub.send_multipart([b"cam9", encode(event)])
        pub.send_multipart([b"cam0", encode(event)])
        if sub.poll(50):
            got = sub.recv_multipart()
    assert got is not None and got[0] == b"cam0" and decode(got[1], 1 << 20) == event


# ================================================================================================ bad input
LIMIT = 4096


def _bases() -> list[Any]:
    now = time.time()
    return [
        Frame("cam0", 1, now, now, 64, 48, JPEG),
        Heartbeat("cam0", "camera", 1, now, 0, ("cam0",)),
        Heartbeat("w0", "worker", 1, now, 2, ()),
        TrackEvent("track_identified", "cam0", 3, "Ada", 0.7, 0.1, now, now, (1, 2, 3, 4), 12.0, 1.0, False),
        TrackEvent("track_identified", "cam0", 4, "Bob", 0.8, 0.2, now, now, None, 30.0, 2.0, False, "visitor-3"),
    ]


def _mutant(rng: random.Random, bases: list[Any]) -> list[bytes]:
    """One bad ZeroMQ message (a list of frames after the identity)."""
    base = rng.choice(bases)
    wire = encode(base)
    obj = msgpack.unpackb(wire, raw=False)
    kind = rng.randrange(9)
    if kind == 0:
        return [rng.randbytes(rng.randrange(0, 200))]
    if kind == 1:
        return [wire[:rng.randrange(0, len(wire))]]
    if kind == 2:
        return [rng.randbytes(LIMIT + rng.randrange(1, 2000))]
    if kind == 3:
        obj["v"] = rng.choice([0, 1, "2", None, 1.5, True, [2]])
    elif kind == 4:
        obj[rng.choice(["extra", "x", "jpeg2", "vv"])] = rng.choice([1, "a", None])
    elif kind == 5:
        del obj[rng.choice([k for k in obj if k != "v"])]
    elif kind == 6:
        obj[rng.choice([k for k in obj if k not in ("v", "t")])] = rng.choice([-1, "x", 1e400, None, [], {}, b"",
                                                                               2**64 - 1, True])
    elif kind == 7:
        data = bytearray(wire)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return [bytes(data)]
    else:
        return [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(2, 5))]
    return [msgpack.packb(obj, use_bin_type=True)]


def _allowed(socket_name: str, identity: bytes, msg: Any) -> bool:
    """Whether the broker would accept ``msg`` from that peer (the fuzzer must only send refused messages)."""
    if socket_name == "frontend" and identity.startswith(b"cam:"):
        name = identity[4:].decode("ascii", "replace")
        return (isinstance(msg, Frame) and msg.camera_id == name) or \
            (isinstance(msg, Heartbeat) and msg.role == "camera" and msg.sender == name)
    if socket_name == "backend" and identity.startswith(b"wrk:"):
        return isinstance(msg, Heartbeat) and msg.role == "worker" and msg.sender == identity[4:].decode("ascii",
                                                                                                         "replace")
    return False


def _expected_reason(socket_name: str, identity: bytes, parts: list[bytes]) -> str | None:
    """The reason the broker must count for this message, or None if it would be accepted."""
    if len(parts) != 1:
        return "bad_frames"
    try:
        msg = decode(parts[0], LIMIT)
    except ProtocolError as exc:
        return exc.reason
    return None if _allowed(socket_name, identity, msg) else "unexpected_message"


def test_10000_bad_messages_are_all_counted_and_the_broker_keeps_routing(harness) -> None:
    h = harness(max_bytes=LIMIT)
    rng = random.Random(1234)
    identities = {"frontend": [b"cam:cam0", b"cam:fz1", b"wrk:w0", b"cam:\xff\xfe", None],
                  "backend": [b"wrk:w0", b"wrk:fz2", b"cam:cam0", None]}
    socks = []
    for name, ids in identities.items():
        for ident in ids:
            sock = h.socket(zmq.DEALER)
            if ident is not None:
                sock.setsockopt(zmq.ROUTING_ID, ident)
            sock.connect(h.broker.endpoints[name])
            socks.append((name, ident or b"", sock))
    bases = _bases()
    valid_unexpected = [encode(b) for b in bases]
    expected: Counter[str] = Counter()
    for i in range(10_000):
        name, ident, sock = rng.choice(socks)
        parts = [rng.choice(valid_unexpected)] if i % 20 == 0 else _mutant(rng, bases)
        reason = _expected_reason(name, ident, parts)
        if reason is None:
            parts = [b"\x00"]  # the mutation happened to stay valid: send a malformed one instead
            reason = "malformed"
        expected[reason] += 1
        sock.send_multipart(parts)
    assert len(expected) >= 9  # every kind of refusal was exercised

    def counted() -> Counter[str]:
        return Counter({r: int(h.metric("argusnet_protocol_errors_total", reason=r)) for r in expected})

    h.until(lambda: sum(counted().values()) >= 10_000, timeout=30)
    assert counted() == expected
    w = h.worker("w1", credits=2)
    cam = h.camera("cam1")
    send_frames(cam, 1, h.peers)
    assert h.until(lambda: len(w.frames) == 1) and w.frames[0].camera_id == "cam1"


# ================================================================================================ CurveZMQ
@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    allowed, workers = tmp_path / "allowed", tmp_path / "workers"
    broker_secret = generate_keys("broker", tmp_path / "broker").secret
    cam_secret = generate_keys("cam0", allowed).secret
    worker_secret = generate_keys("w1", workers).secret
    rogue_secret = generate_keys("rogue", tmp_path / "other").secret
    security = SecurityConfig(curve=True, broker_secret_key=broker_secret, allowed_keys_dir=allowed,
                              worker_keys_dir=workers)
    return {"security": security, "server": load_public_key(broker_secret), "w1": load_secret_key(worker_secret),
            "cam0": load_secret_key(cam_secret), "rogue": load_secret_key(rogue_secret)}


def test_curve_allow_listed_camera_gets_through(harness, keys) -> None:
    h = harness(security=keys["security"])
    w = h.worker("w1", credits=2, curve=(keys["w1"].public, keys["w1"].secret, keys["server"]))
    good = h.camera("cam0", curve=(keys["cam0"].public, keys["cam0"].secret, keys["server"]))
    send_frames(good, 1, h.peers)
    assert h.until(lambda: len(w.frames) == 1) and w.frames[0].camera_id == "cam0"
    assert h.registry.get_sample_value("argusnet_auth_refused_total", {"reason": "unknown_key"}) == 0


def refused(h: Harness) -> dict[str, float]:
    return {r: h.metric("argusnet_auth_refused_total", reason=r) for r in AUTH_REFUSED_REASONS}


def test_curve_unlisted_key_is_refused_and_counted(harness, keys) -> None:
    h = harness(security=keys["security"])
    rogue = h.camera("rogue", curve=(keys["rogue"].public, keys["rogue"].secret, keys["server"]))
    assert h.until(lambda: refused(h)["unknown_key"] >= 1)
    assert not h.until(lambda: bool(rogue.broker_beats), timeout=0.7)
    assert h.broker.routing.cameras() == [] and sum(refused(h).values()) == refused(h)["unknown_key"]


def test_curve_plain_text_camera_is_refused_and_counted(harness, keys) -> None:
    h = harness(security=keys["security"])
    plain = h.camera("plain")
    assert h.until(lambda: refused(h)["mechanism_mismatch"] + refused(h)["handshake_aborted"] >= 1)
    assert not h.until(lambda: bool(plain.broker_beats), timeout=0.7)
    assert h.broker.routing.cameras() == [] and refused(h)["unknown_key"] == 0
    assert h.metric("argusnet_protocol_errors_total", reason="malformed") == 0


def test_curve_needs_its_key_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="broker_secret_key"):
        Harness(security=SecurityConfig(curve=True, allowed_keys_dir=tmp_path, worker_keys_dir=tmp_path))
    secret = generate_keys("broker", tmp_path / "b").secret
    with pytest.raises(InputError, match="does not exist"):
        Harness(security=SecurityConfig(curve=True, broker_secret_key=secret, allowed_keys_dir=tmp_path / "no",
                                        worker_keys_dir=tmp_path))
    with pytest.raises(ConfigError, match="worker_keys_dir is required"):
        Harness(security=SecurityConfig(curve=True, broker_secret_key=secret, allowed_keys_dir=tmp_path))


# ================================================================================================ keys, CLI
def test_generate_and_load_keys(tmp_path: Path) -> None:
    files = generate_keys("cam-7", tmp_path / "keys")
    public, secret = files.public, files.secret
    assert public.name == "cam-7.key" and secret.name == "cam-7.key_secret"
    assert secret.stat().st_mode & 0o077 == 0
    pair = load_secret_key(secret)
    pub, sec = pair.public, pair.secret
    assert load_public_key(public) == pub and len(pub) == 40 and len(sec) == 40
    assert load_public_keys(tmp_path / "keys") == {pub: "cam-7"}
    with pytest.raises(InputError, match="already exists"):
        generate_keys("cam-7", tmp_path / "keys")
    with pytest.raises(InputError, match="key name"):
        generate_keys("../evil", tmp_path)
    with pytest.raises(InputError, match="no secret key"):
        load_secret_key(public)
    with pytest.raises(InputError, match="does not exist"):
        load_public_keys(tmp_path / "missing")


def test_command_line_overrides_are_validated() -> None:
    args = argparse.Namespace(frontend="tcp://127.0.0.1:6000", backend=None, events_in=None, events_out=None,
                              metrics_port=0)
    cfg = broker_config(args, ArgusConfig())
    assert cfg.frontend == "tcp://127.0.0.1:6000" and cfg.metrics_port == 0 and cfg.backend == BrokerConfig().backend
    with pytest.raises(ConfigError, match="metrics_port"):
        broker_config(argparse.Namespace(metrics_port=70000), ArgusConfig())

