"""Brokers share one camera -> worker assignment through the workers' claims (issue 13, broker failover): each
worker's heartbeat lists the cameras it served lately, and a broker choosing a worker for a camera that has none
there prefers a live worker that claims it. Pure routing tables standing for two brokers, the claims a worker
computes from its own counter, a real broker over ZeroMQ, and a real worker's heartbeats."""

from __future__ import annotations

import itertools
import time

import msgpack
import pytest
import zmq
from prometheus_client import CollectorRegistry, Counter

from argusnet.commands.demo import enrol_demo_person
from broker.routing import Move, Routing, Seen
from gpu_worker.served import SERVED_S, ServedCameras
from gpu_worker.tracked import TrackedProcessor
from shared.protocol import MAX_CAMERAS, SCHEMA_VERSION, Heartbeat, decode
from store.config import LocalStoreConfig
from tests.test_broker import Harness, by_camera, send_frames
from tests.test_worker_service import Harness as WorkerHarness

DEAD = 1.5


def tables(*workers: str, claims: dict[str, tuple[str, ...]] | None = None, now: float = 0.0) -> Routing:
    """A routing table (one broker) that has heard ``workers``, with their claims."""
    r = Routing(dead_after_s=DEAD)
    for w in workers:
        r.worker_seen(w, 1, now, (claims or {}).get(w, ()))
    return r


def claims_from(*brokers: Routing) -> dict[str, tuple[str, ...]]:
    """What each worker serves across these brokers: the claims its next heartbeat to every broker carries."""
    out: dict[str, list[str]] = {}
    for r in brokers:
        for w in r.live_workers():
            out.setdefault(w, []).extend(r.cameras_of(w))
    return {w: tuple(cams) for w, cams in out.items()}


# ================================================================================================ routing
def test_a_camera_new_here_goes_to_the_live_worker_that_claims_it_even_if_busier() -> None:
    r = tables("w1", "w2", claims={"w2": ("cb", "cc", "cd")})
    assert r.camera_seen("ca", 0.0) == (Seen.NEW, [Move("ca", None, "w1")])  # no claim: the least loaded
    for cam in ("cb", "cc", "cd"):  # claimed by w2: w2, although w1 is less loaded after the first
        assert r.camera_seen(cam, 0.0) == (Seen.NEW, [Move(cam, None, "w2", claimed=True)])
    assert r.load() == {"w1": 1, "w2": 3}
    assert r.claims_of("w2") == {"cb", "cc", "cd"} and r.claims_of("nobody") == frozenset()


def test_claims_never_move_a_camera_that_has_a_live_worker() -> None:
    r = tables("w1", "w2")
    r.camera_seen("ca", 0.0)
    assert r.worker_of("ca") == "w1"
    for seq in range(2, 50):  # w2 claims it over and over (it served it through another broker)
        assert r.worker_seen("w2", seq, seq * 0.01, ("ca",)) == (Seen.KNOWN, [])
    assert r.worker_of("ca") == "w1" and r.load() == {"w1": 1, "w2": 0}


def test_claims_of_dead_workers_count_for_nothing_and_two_claimants_share_by_load() -> None:
    r = tables("w1", "w2", "w3", claims={"w3": ("ca",)})
    r.worker_seen("w1", 2, 1.0)
    r.worker_seen("w2", 2, 1.0, ("ca", "cb", "cc"))
    assert r.expire(2.0).dead_workers == ("w3",)  # w3's claim no longer counts
    assert r.camera_seen("ca", 2.0)[1] == [Move("ca", None, "w2", claimed=True)]
    r.worker_seen("w1", 3, 2.0, ("cb",))  # both claim cb (a camera moved moments ago): the less loaded takes it
    assert r.camera_seen("cb", 2.0)[1] == [Move("cb", None, "w1", claimed=True)]
    r.worker_seen("w1", 4, 2.1, ())  # a claim is replaced by the next heartbeat's
    assert r.camera_seen("cc", 2.1)[1] == [Move("cc", None, "w2", claimed=True)]
    assert r.camera_seen("cd", 2.1)[1] == [Move("cd", None, "w1")]


def test_a_dead_workers_cameras_go_to_the_worker_that_claims_them() -> None:
    r = tables("w1", "w2", "w3")
    for cam in ("ca", "cb", "cc"):
        r.camera_seen(cam, 0.0)
    assert r.worker_of("ca") == "w1"
    for t in (1.0, 2.0):  # w1 falls silent; w3 claims ca (it serves it for the other broker)
        r.worker_seen("w2", int(t * 10), t)
        r.worker_seen("w3", int(t * 10), t, ("ca",))
        for cam in ("ca", "cb", "cc"):
            r.camera_seen(cam, t)
    expired = r.expire(2.0)
    assert expired.dead_workers == ("w1",) and expired.moves == (Move("ca", "w1", "w3", claimed=True),)


def test_a_revived_worker_that_still_claims_its_old_cameras_does_not_get_them_back() -> None:
    """A link cut (not a pause: the worker kept its claims): the sticky rule wins over the claims."""
    r = tables("w1", "w2")
    for i in range(4):
        r.camera_seen(f"c{i}", 0.0)
    lost = set(r.cameras_of("w1"))
    for t in (1.0, 2.0):
        r.worker_seen("w2", int(t) + 1, t)
        for i in range(4):
            r.camera_seen(f"c{i}", t)
    assert r.expire(2.0).dead_workers == ("w1",)
    seen, moves = r.worker_seen("w1", 2, 2.5, tuple(lost))
    assert seen is Seen.REVIVED and r.load() == {"w1": 2, "w2": 2}
    assert {m.camera for m in moves}.isdisjoint(lost) and set(r.cameras_of("w2")) == lost


def failover(a: Routing, cameras: list[str], order: list[str]) -> Routing:
    """Broker B, which has heard the workers of ``a`` with their claims, takes ``cameras`` in ``order``."""
    b = tables(*a.live_workers(), claims=claims_from(a))
    for cam in order:
        b.camera_seen(cam, 0.0)
    return b


def test_cameras_failing_over_keep_their_workers_in_any_order() -> None:
    a = tables("w2")  # w2 first: it takes all three; w1 joins and takes one (counts 2 / 1)
    cameras = ["ca", "cb", "cc"]
    for cam in cameras:
        a.camera_seen(cam, 0.0)
    a.worker_seen("w1", 1, 0.0)
    before = {cam: a.worker_of(cam) for cam in cameras}
    assert sorted(before.values()) == ["w1", "w2", "w2"]
    for order in itertools.permutations(cameras):
        b = failover(a, cameras, list(order))
        assert {cam: b.worker_of(cam) for cam in cameras} == before, order
    fresh = Routing(dead_after_s=DEAD)  # without claims, B would give w1 two of them, whatever the order
    for w in a.live_workers():
        fresh.worker_seen(w, 1, 0.0)
    for cam in cameras:
        fresh.camera_seen(cam, 0.0)
    assert fresh.load() == {"w1": 2, "w2": 1}


def test_two_brokers_that_disagree_do_not_bounce_cameras() -> None:
    """Cameras split over two brokers, each broker's view of the load different; the workers claim what they serve
    on both. Rounds of heartbeats with those claims, a worker dying, reviving and a third joining: every move is
    caused by one of those events, and between them nothing moves."""
    a, b = tables("w1", "w2"), tables("w1", "w2")
    for i in range(5):
        a.camera_seen(f"a{i}", 0.0)
    for i in range(3):
        b.camera_seen(f"b{i}", 0.0)
    t = 0.0

    def rounds(n: int, workers: tuple[str, ...]) -> int:
        nonlocal t
        moved = 0
        for _ in range(n):
            t += 0.5
            claims = claims_from(a, b)
            for r in (a, b):
                for w in workers:
                    moved += len(r.worker_seen(w, int(t * 10), t, claims.get(w, ()))[1])
                for cam in r.cameras():
                    r.camera_seen(cam, t)
                moved += len(r.expire(t).moves)
        return moved

    assert rounds(20, ("w1", "w2")) == 0
    assert rounds(4, ("w2",)) > 0  # w1 dies on both brokers: its cameras move
    assert rounds(20, ("w2",)) == 0
    rounds(1, ("w1", "w2"))  # w1 revives: a bounded rebalance (no camera is being tracked here)
    assert rounds(20, ("w1", "w2")) == 0
    rounds(1, ("w1", "w2", "w3"))  # w3 joins
    assert rounds(20, ("w1", "w2", "w3")) == 0
    for r in (a, b):
        assert max(r.load().values()) - min(r.load().values()) <= 1, r.load()


def test_a_joining_worker_takes_no_camera_being_tracked_until_its_tracks_end() -> None:
    """Issue 24: a restarted worker took a healthy camera mid-walk (one walk, two tracks). The rebalance after a
    join moves idle cameras at once, a tracked one only at a heartbeat after its worker stopped tracking it."""
    r = tables("w1")
    for cam in ("c0", "c1", "c2", "c3"):
        r.camera_seen(cam, 0.0)
    busy = ("c0", "c1", "c2", "c3")
    _, moves = r.worker_seen("w2", 1, 0.1)
    assert [m.new for m in moves] == ["w2", "w2"] and r.load() == {"w1": 2, "w2": 2}  # nothing tracked: even
    r = tables("w1")
    for cam in busy:
        r.camera_seen(cam, 0.0)
    r.worker_seen("w1", 2, 0.1, busy, tracking=("c0", "c1", "c2"))
    _, moves = r.worker_seen("w2", 1, 0.2)
    assert [m.camera for m in moves] == ["c3"]  # the idle camera only
    for t, tracking in ((0.3, ("c0", "c1", "c2")), (0.4, ("c0", "c1", "c2"))):
        assert r.worker_seen("w1", int(t * 10) + 2, t, busy, tracking=tracking)[1] == []
        assert r.worker_seen("w2", int(t * 10) + 1, t)[1] == []
    _, moves = r.worker_seen("w1", 9, 0.5, busy, tracking=("c0", "c2"))  # c1's walk ended
    assert [(m.camera, m.old, m.new) for m in moves] == [("c1", "w1", "w2")] and r.load() == {"w1": 2, "w2": 2}
    assert r.worker_seen("w1", 10, 0.6, busy, tracking=())[1] == []  # balanced: nothing more moves


# ================================================================================================ worker claims
def test_a_worker_claims_the_cameras_it_processed_lately_and_nothing_from_before_a_pause() -> None:
    processed = Counter("argusnet_frames_out", "Frames processed", ["camera"], registry=CollectorRegistry())
    served = ServedCameras(processed)
    assert served.claims(0.0) == ()
    processed.labels(camera="ca").inc()
    processed.labels(camera="cz")  # exported at 0: never processed, never claimed
    assert served.claims(0.5) == ("ca",)
    processed.labels(camera="cb").inc()
    assert served.claims(0.6) == ("ca",)  # read at most every REFRESH_S
    assert served.claims(1.0) == ("cb", "ca")  # the most recently served first
    t = 1.0
    while t < 1.0 + SERVED_S:
        t += 0.5
        processed.labels(camera="cb").inc()
        claimed = served.claims(t)
    assert claimed == ("cb",), "ca was served more than SERVED_S ago"
    processed.labels(camera="cb").inc()
    assert served.claims(t + DEAD + 0.5) == (), "claims of cameras served before a pause"
    processed.labels(camera="cb").inc()
    assert served.claims(t + DEAD + 1.0) == ("cb",)


def test_the_claims_are_bounded_and_the_settings_checked() -> None:
    processed = Counter("argusnet_frames_out", "Frames processed", ["camera"], registry=CollectorRegistry())
    served = ServedCameras(processed, limit=2)
    served.claims(0.0)
    for i, cam in enumerate(("c1", "c2", "c3")):
        processed.labels(camera=cam).inc()
        served.claims(0.5 * (i + 1))
    assert served.claims(1.5) == ("c3", "c2")
    with pytest.raises(ValueError, match="limit"):
        ServedCameras(processed, limit=MAX_CAMERAS + 1)
    with pytest.raises(ValueError, match="window_s"):
        ServedCameras(processed, window_s=0)


# ================================================================================================ real broker
@pytest.fixture
def h():
    """A real broker in a thread (tests.test_broker.Harness) with DEALER peers speaking the real protocol."""
    made = Harness()
    yield made
    made.close()


def test_the_broker_gives_a_new_camera_to_the_worker_that_claims_it_and_keeps_it_there(h) -> None:
    w1, w2 = h.worker("w1", credits=4), h.worker("w2", credits=4)
    w2.claims = ("cam1",)
    w2.beat(0)
    assert h.until(lambda: h.broker.routing.claims_of("w2") == {"cam1"})
    cam1 = h.camera("cam1")  # both idle: without the claim it would go to w1
    assert h.until(lambda: h.broker.routing.worker_of("cam1") == "w2")
    cam0 = h.camera("cam0")
    send_frames(cam1, 3, h.peers)
    send_frames(cam0, 3, h.peers)
    assert h.until(lambda: len(w1.frames) + len(w2.frames) == 6)
    assert by_camera(w1, w2) == {"cam1": {"w2"}, "cam0": {"w1"}}
    w1.claims, w2.claims = ("cam1",), ("cam0",)  # each claims the other's camera now: nothing moves
    w1.beat(0)
    w2.beat(0)
    assert h.until(lambda: h.broker.routing.claims_of("w1") == {"cam1"} and
                   h.broker.routing.claims_of("w2") == {"cam0"})
    send_frames(cam0, 2, h.peers)
    send_frames(cam1, 2, h.peers)
    assert h.until(lambda: len(w1.frames) + len(w2.frames) == 10)
    assert by_camera(w1, w2) == {"cam1": {"w2"}, "cam0": {"w1"}}


def test_a_malformed_camera_list_in_a_worker_heartbeat_is_counted_and_the_broker_keeps_routing(h) -> None:
    w1 = h.worker("w1", credits=4)
    rogue = h.socket(zmq.DEALER)
    rogue.setsockopt(zmq.ROUTING_ID, b"wrk:w9")
    rogue.connect(h.broker.endpoints["backend"])
    body = {"v": SCHEMA_VERSION, "t": "heartbeat", "sender": "w9", "role": "worker", "seq": 1, "ts": time.time(),
            "credits": 4, "tracking": []}
    bad = {"bad_value": ["cam0", "../etc"], "malformed": [f"c{i}" for i in range(MAX_CAMERAS + 1)],
           "bad_type": "cam0"}
    for reason, cameras in bad.items():
        rogue.send(msgpack.packb({**body, "cameras": cameras}, use_bin_type=True))
        assert h.until(lambda: h.metric("argusnet_protocol_errors_total", reason=reason) == 1), reason
    assert not h.broker.routing.is_alive("w9")
    cam = h.camera("cam0")
    send_frames(cam, 2, h.peers)
    assert h.until(lambda: len(w1.frames) == 2)


# ================================================================================================ real worker
@pytest.fixture
def processor(engine, tmp_path):
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / "gallery"))
    yield TrackedProcessor(engine, store, engine.cfg, worker="w1")
    store.close()


def test_a_real_workers_heartbeats_claim_the_camera_it_serves_then_let_it_go(processor) -> None:
    wh = WorkerHarness(processor, CollectorRegistry())
    claims: list[tuple[float, tuple[str, ...]]] = []

    def read_beats(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if wh.router.poll(50):
                msg = decode(wh.router.recv_multipart()[1], 1 << 20)
                if isinstance(msg, Heartbeat):
                    claims.append((time.monotonic(), msg.cameras))

    try:
        deadline = time.monotonic() + 10
        while not claims and time.monotonic() < deadline:
            read_beats(0.2)
        assert claims and all(c == () for _, c in claims), "claims before any frame"
        for i in range(10):
            wh.send(2.0 + i / 10)
            read_beats(0.1)
        deadline = time.monotonic() + 10
        while not any(c == ("cam",) for _, c in claims) and time.monotonic() < deadline:
            read_beats(0.2)
        served_at = next(t for t, c in claims if c == ("cam",))
        last_frame = time.monotonic()
        while claims[-1][1] and time.monotonic() < last_frame + SERVED_S + 10:
            read_beats(0.2)
        assert claims[-1][1] == (), "the claim outlived the camera"
        released = next(t for t, c in claims if t > served_at and c == ())
        assert released >= last_frame + SERVED_S - 2.0, "released too early: a failover would miss it"
    finally:
        wh.close()
