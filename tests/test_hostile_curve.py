"""Hostile peers against CURVE and the broker (issue 24), with real processes on loopback ports: a real
`argusnet broker` with CurveZMQ on every socket, a real worker, the honest demo camera (`argusnet camera`) and
`argusnet events`, each with its own key; the attackers are a real camera node with another camera's id, and
sockets speaking the real protocol with keys off the allow-lists (or none). Then the broker bound off loopback
without CURVE, and a (re)joining worker next to a worker with live tracks."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
import zmq

from shared.keys import generate_keys, load_public_key, load_secret_key
from shared.metrics import AUTH_REFUSED, FRAMES_IN
from shared.protocol import Heartbeat, TrackEvent, encode
from shared.zmq_defaults import configure
from tests.processes import Cluster, total, wait_until
from tests.test_broker import Harness, send_frames

HONEST = "cam-front"
OTHER = "cam-back"  # an allow-listed camera key, used by the rogue to send as HONEST
FORGED = "forged-cam"


@pytest.fixture(scope="module")
def demo_gallery(tmp_path_factory, engine) -> Path:
    from argusnet.commands.demo import enrol_demo_person
    from store.config import LocalStoreConfig

    directory = tmp_path_factory.mktemp("hostile-curve") / "gallery"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    return directory


def make_keys(tmp: Path) -> dict[str, Any]:
    """Key pairs in tmp/keys; each allow-list folder holds copies of its public keys only."""
    keys = {name: generate_keys(name, tmp / "keys") for name in
            ("broker", HONEST, OTHER, "w1", "events", "rogue-worker", "rogue-sub", "rogue-pub")}
    for folder, names in (("cameras", (HONEST, OTHER)), ("workers", ("w1",)), ("subscribers", ("events",))):
        (tmp / folder).mkdir()
        for name in names:
            shutil.copy(keys[name].public, tmp / folder / f"{name}.key")
    return keys


class Site:
    """The cluster, its keys, and the test's own sockets (closed at the end)."""

    def __init__(self, tmp: Path, gallery: Path) -> None:
        self.tmp = tmp
        self.keys = make_keys(tmp)
        k = self.keys
        security = {"curve": True, "broker_secret_key": str(k["broker"].secret),
                    "broker_public_key": str(k["broker"].public), "allowed_keys_dir": str(tmp / "cameras"),
                    "worker_keys_dir": str(tmp / "workers"), "subscriber_keys_dir": str(tmp / "subscribers"),
                    "camera_secret_key": str(k[HONEST].secret), "worker_secret_key": str(k["w1"].secret),
                    "subscriber_secret_key": str(k["events"].secret)}
        self.cluster = Cluster(tmp, gallery, extra={"security": security})
        self.server_key = load_public_key(k["broker"].public)
        self.ctx = zmq.Context()
        self.sockets: list[zmq.Socket] = []
        self.events = tmp / "events.jsonl"

    def socket(self, kind: int, key: str | None = None, routing_id: bytes | None = None) -> zmq.Socket:
        """A socket of the test; ``key``: a CURVE client with that key pair (else plain text)."""
        sock = configure(self.ctx.socket(kind), hwm=1000)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if key is not None:
            pair = load_secret_key(self.keys[key].secret)
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pair.public, pair.secret, \
                self.server_key
        self.sockets.append(sock)
        return sock

    def refused(self, reason: str) -> float:
        return total(self.cluster.metrics("broker"), AUTH_REFUSED, reason=reason)

    def honest_frames(self) -> float:
        return total(self.cluster.metrics("w1"), FRAMES_IN, camera=HONEST)

    def flowing(self, timeout: float = 30) -> bool:
        """The honest camera's frames keep reaching the worker: 3 more from now on."""
        start = self.honest_frames()
        return wait_until(lambda: self.honest_frames() >= start + 3, timeout, 0.2)

    def logged_events(self) -> list[dict[str, Any]]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(0)
        self.ctx.term()
        self.cluster.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_gallery) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("site"), demo_gallery)
    c = s.cluster
    try:
        c.broker()
        c.worker("w1")
        late = c.not_ready(["broker", "w1"])
        assert not late, late
        c.start("events", "events", "--jsonl", str(s.events), metrics=False)
        c.camera(HONEST, "demo", "--fps", "5")
        assert s.flowing(90), c.log(HONEST)[-2000:] + c.log("broker")[-2000:] + c.log("w1")[-2000:]
        assert s.refused("mechanism_mismatch") + s.refused("handshake_aborted") == 0, c.log("broker")[-2000:]
        yield s
    finally:
        s.close()


def test_a_camera_key_sending_as_another_cameras_id_is_refused_and_counted(site) -> None:
    """A node with the allow-listed key of cam-back runs as cam-front: every message refused and counted
    (camera_id_mismatch), logged once; the real cam-front keeps flowing."""
    c = site.cluster
    rogue_cfg = site.tmp / "rogue-camera.yaml"
    rogue_cfg.write_text(c.config.read_text().replace(str(site.keys[HONEST].secret), str(site.keys[OTHER].secret)))
    c.config, saved = rogue_cfg, c.config
    try:
        c.camera("rogue-camera", "demo", "--fps", "5", "--id", HONEST)
    finally:
        c.config = saved
    assert wait_until(lambda: site.refused("camera_id_mismatch") >= 5, 30, 0.2), c.log("broker")[-2000:]
    assert site.flowing()
    assert c.log("broker").count(f"refused a message sent as camera '{HONEST}' by the key of {OTHER}") == 1
    assert c.procs["broker"].poll() is None and c.procs["rogue-camera"].poll() is None
    c.stop("rogue-camera")


def test_a_connection_holding_a_cameras_routing_id_cannot_lock_it_out(site) -> None:
    """A rogue with an allow-listed key takes the routing id `cam:cam-front` and heartbeats as cam-front; the real
    camera restarts and still gets through (its routing id has a part the rogue cannot know)."""
    c = site.cluster
    rogue = site.socket(zmq.DEALER, OTHER, routing_id=b"cam:" + HONEST.encode())
    rogue.connect(c.endpoint("frontend"))
    before = site.refused("camera_id_mismatch")
    for seq in range(1, 400):
        try:
            rogue.send(encode(Heartbeat(HONEST, "camera", seq, time.time(), 0, ())), zmq.NOBLOCK)
        except zmq.Again:
            pass
        if site.refused("camera_id_mismatch") > before:
            break
        time.sleep(0.05)
    assert site.refused("camera_id_mismatch") > before
    c.stop(HONEST)
    c.camera(HONEST, "demo", "--fps", "5")
    assert site.flowing(60), c.log(HONEST)[-2000:]
    while rogue.poll(0):  # the broker never answered the rogue: no credits, no heartbeat
        pytest.fail(f"the rogue got a message from the broker: {rogue.recv()[:80]!r}")


def test_unauthorised_workers_get_no_frames(site) -> None:
    """A plain-text worker and a worker with a key off the worker allow-list heartbeat with credits: neither gets a
    frame (both refused and counted) while w1 keeps getting the camera's frames."""
    c = site.cluster
    plain = site.socket(zmq.DEALER, routing_id=b"wrk:rogue-plain")
    keyed = site.socket(zmq.DEALER, "rogue-worker", routing_id=b"wrk:rogue-keyed")
    for sock in (plain, keyed):
        sock.connect(c.endpoint("backend"))
    got: list[bytes] = []

    def beat_and_listen(seq: int) -> None:
        for sock, name in ((plain, "rogue-plain"), (keyed, "rogue-keyed")):
            try:
                sock.send(encode(Heartbeat(name, "worker", seq, time.time(), 8, ())), zmq.NOBLOCK)
            except zmq.Again:
                pass
            while sock.poll(0):
                got.append(sock.recv())

    seq = 0

    def refused_both() -> bool:
        nonlocal seq
        seq += 1
        beat_and_listen(seq)
        return site.refused("unknown_worker_key") >= 1 and \
            site.refused("mechanism_mismatch") + site.refused("handshake_aborted") >= 1

    assert wait_until(refused_both, 20, 0.1), c.log("broker")[-2000:]
    assert site.flowing()  # meanwhile, and for 3 more frames
    beat_and_listen(seq + 1)
    assert got == []
    assert total(c.metrics("broker"), "argusnet_workers_alive") == 1


def test_unauthorised_subscribers_get_no_events_and_forged_events_are_not_seen(site) -> None:
    """Plain-text and off-list subscribers get nothing while `argusnet events` (its key allow-listed) logs the
    honest camera's events; forged events published in plain text or with an off-list key reach no one."""
    c = site.cluster
    subscribers = [site.socket(zmq.SUB), site.socket(zmq.SUB, "rogue-sub")]
    publishers = [site.socket(zmq.PUB), site.socket(zmq.PUB, "rogue-pub")]
    for sub in subscribers:
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(c.endpoint("events_out"))
    for pub in publishers:
        pub.connect(c.endpoint("events_in"))
    start, track = time.time(), 0
    stolen: list[bytes] = []

    def publish_and_listen() -> bool:
        nonlocal track
        track += 1
        now = time.time()
        forged = TrackEvent("track_identified", FORGED, track, "Forged Name", 0.9, 0.5, now, now, None, 1.0, 0.1,
                            False)
        for pub in publishers:
            pub.send_multipart([FORGED.encode(), encode(forged)], zmq.NOBLOCK)
        for sub in subscribers:
            while sub.poll(0):
                stolen.append(sub.recv_multipart()[-1])
        fresh = [e for e in site.logged_events() if e["camera"] == HONEST and e["ts"] > start + 1.0]
        refused = site.refused("unknown_subscriber_key") >= 1 and site.refused("unknown_publisher_key") >= 1
        return len(fresh) >= 2 and refused

    assert wait_until(publish_and_listen, 90, 0.1), (site.logged_events()[-3:], c.log("events")[-2000:])
    assert stolen == []
    assert [e for e in site.logged_events() if e["camera"] == FORGED] == []


# ================================================================================================ plain text
def plain_config(tmp: Path, host: str, **broker: Any) -> Path:
    from argusnet.launcher import free_port

    ports = {k: free_port() for k in ("frontend", "backend", "events_in", "events_out", "metrics")}
    path = tmp / f"plain-{host}-{len(broker)}.yaml"
    path.write_text(yaml.safe_dump({"broker": {
        "frontend": f"tcp://{host}:{ports['frontend']}", "backend": f"tcp://127.0.0.1:{ports['backend']}",
        "events_in": f"tcp://127.0.0.1:{ports['events_in']}", "events_out": f"tcp://127.0.0.1:{ports['events_out']}",
        "metrics_port": ports["metrics"], **broker}}))
    return path


def test_a_broker_bound_off_loopback_without_curve_refuses_to_start(tmp_path, cli) -> None:
    """0.0.0.0 without CURVE: exit 2 with one line naming the way out; with broker.allow_plaintext it runs (and is
    stopped by the timeout only when it started)."""
    r = cli("--config", plain_config(tmp_path, "0.0.0.0"), "broker", timeout=60)
    assert r.code == 2, r
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "allow_plaintext" in lines[0] and "0.0.0.0" in lines[0], r.err
    assert "Traceback" not in r.err
    loopback = cli("--config", plain_config(tmp_path, "127.0.0.1"), "camera", "--id", "c1", "--source", "demo",
                   "--broker", "tcp://192.0.2.7:5555", "--check", timeout=60)
    assert loopback.code == 2 and "unencrypted" in loopback.err and "Traceback" not in loopback.err, loopback
    accepted = cli("--config", plain_config(tmp_path, "127.0.0.1", allow_plaintext=True), "camera", "--id", "c1",
                   "--source", "demo", "--broker", "tcp://192.0.2.7:5555", "--check", timeout=60)
    assert accepted.code == 0, accepted


def test_a_broker_allowed_plaintext_starts_off_loopback(tmp_path) -> None:
    cluster = Cluster(tmp_path, tmp_path / "gallery", extra={"broker": {"allow_plaintext": True}})
    config = yaml.safe_load(cluster.config.read_text())
    config["broker"]["frontend"] = config["broker"]["frontend"].replace("127.0.0.1", "0.0.0.0")
    cluster.config.write_text(yaml.safe_dump(config))
    try:
        cluster.broker()
        late = cluster.not_ready(["broker"], 30)
        assert not late, late
    finally:
        cluster.close()


# ================================================================================================ worker joins
def test_a_joining_worker_does_not_take_a_camera_with_live_tracks(tmp_path) -> None:
    """A real broker: w1 serves four cameras and holds live tracks of three; w2 (a restarted worker) joins: it gets
    the idle camera at once, none of the tracked ones; once w1's track of cam1 ended, cam1 moves to w2 (even load),
    and the still-tracked cameras stay on w1."""
    h = Harness(frontend="tcp://127.0.0.1:*", backend="tcp://127.0.0.1:*", events_in="tcp://127.0.0.1:*",
                events_out="tcp://127.0.0.1:*")
    try:
        w1 = h.worker("w1", credits=8)
        cams = [h.camera(f"cam{i}") for i in range(4)]
        for cam in cams:
            send_frames(cam, 2, h.peers)
        assert h.until(lambda: len(w1.frames) == 8)
        w1.claims = ("cam0", "cam1", "cam2", "cam3")
        w1.tracking = ("cam0", "cam1", "cam2")
        w1.beat(0)
        assert h.until(lambda: h.broker.routing.claims_of("w1") == frozenset(w1.claims))
        w2 = h.worker("w2", credits=8)
        assert h.until(lambda: h.broker.routing.is_alive("w2"))
        assert h.until(lambda: h.broker.routing.load() == {"w1": 3, "w2": 1})
        assert h.broker.routing.worker_of("cam3") == "w2"
        for cam in cams[:3]:
            send_frames(cam, 2, h.peers)
        assert h.until(lambda: len(w1.frames) == 14)
        assert w2.frames == [] and h.broker.routing.load() == {"w1": 3, "w2": 1}
        w1.tracking = ("cam0", "cam2")  # cam1's walk ended
        w1.beat(0)
        assert h.until(lambda: h.broker.routing.load() == {"w1": 2, "w2": 2})
        assert h.broker.routing.worker_of("cam1") == "w2"
        assert {h.broker.routing.worker_of(c) for c in ("cam0", "cam2")} == {"w1"}
    finally:
        h.close()
