"""The streaming pipeline as real processes on 127.0.0.1: camera nodes -> broker -> workers, with frame
accounting, worker failover, broker restart, and 10,000 bad messages into a worker."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq

from shared.protocol import Frame, Heartbeat, decode, encode
from store.config import LocalStoreConfig
from tests.processes import REPO, Cluster, total, wait_until

pytestmark = pytest.mark.slow

FRAMES_IN, FRAMES_OUT, DROPPED = "argusnet_frames_in_total", "argusnet_frames_out_total", "argusnet_frames_dropped_total"
PROTOCOL_ERRORS = "argusnet_protocol_errors_total"


@pytest.fixture(scope="module")
def demo_gallery(tmp_path_factory, engine):
    from argusnet.commands.demo import enrol_demo_person

    directory = tmp_path_factory.mktemp("streaming") / "gallery"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    return directory


@pytest.fixture
def cluster(tmp_path, demo_gallery):
    c = Cluster(tmp_path, demo_gallery, extra={"worker": {"capacity": 2}})
    yield c
    c.close()


def camera_summary(cluster: Cluster, name: str) -> dict[str, int]:
    found = re.search(rf"camera {name} stopped: (\{{.*\}})", cluster.log(name))
    assert found, f"no summary line in the log of {name}:\n{cluster.log(name)[-2000:]}"
    return json.loads(found.group(1))


def worker_totals(cluster: Cluster, workers: list[str], camera: str) -> tuple[float, float]:
    """(frames in, frames out + dropped) of one camera over all workers."""
    m = [cluster.metrics(w) for w in workers]
    return (sum(total(x, FRAMES_IN, camera=camera) for x in m),
            sum(total(x, FRAMES_OUT, camera=camera) + total(x, DROPPED, camera=camera) for x in m))


def test_three_cameras_two_workers_every_frame_is_processed_or_counted(cluster, data_dir):
    arcade = str(data_dir / "facenet-pytorch" / "arcade.mp4")
    cluster.broker()
    workers = ["w1", "w2"]
    for w in workers:
        cluster.worker(w)
    late = cluster.not_ready(workers)
    assert not late, late
    cameras = {"file1": (arcade, "--no-loop", "--fps", "8"), "file2": (arcade, "--no-loop", "--fps", "8"),
               "demo1": ("demo", "--fps", "5")}
    for name, (source, *args) in cameras.items():
        cluster.camera(name, source, *args)
    assert wait_until(lambda: all(cluster.procs[c].poll() is not None for c in ("file1", "file2")), 60)
    assert cluster.stop("demo1") == 0
    broker = {}

    def settled() -> bool:
        broker.update(cluster.metrics("broker"))
        for cam in cameras:
            b_in = total(broker, FRAMES_IN, camera=cam)
            b_left = total(broker, FRAMES_OUT, camera=cam) + total(broker, DROPPED, camera=cam)
            w_in, w_done = worker_totals(cluster, workers, cam)
            if b_in != b_left or w_in != total(broker, FRAMES_OUT, camera=cam) or w_in != w_done:
                return False
        return True

    assert wait_until(settled, 60, 0.5), "frames still in flight after 60 s"
    serving = set()
    for cam in cameras:
        s = camera_summary(cluster, cam)
        assert s["captured"] > 0
        assert s["captured"] == sum(s.get(k, 0) for k in ("sent", "unchanged", "queue_full", "not_connected",
                                                           "shutdown")), s
        assert total(broker, FRAMES_IN, camera=cam) == s["sent"], (cam, s)
        per_worker = [total(cluster.metrics(w), FRAMES_IN, camera=cam) for w in workers]
        assert sum(1 for n in per_worker if n > 0) == 1, f"camera {cam} was split across workers: {per_worker}"
        serving.add(workers[int(np.argmax(per_worker))])
    assert serving == set(workers), "the two workers did not share the three cameras"
    for w in workers:
        assert cluster.stop(w) == 0
    assert cluster.stop("broker") == 0


def cameras_of(cluster: Cluster, worker: str, cameras: list[str]) -> list[str]:
    m = cluster.metrics(worker)
    return [c for c in cameras if total(m, FRAMES_IN, camera=c) > 0]


def test_sigkilled_worker_cameras_continue_on_the_other_within_3_s(cluster):
    cluster.broker()
    cluster.worker("w1")
    cluster.worker("w2")
    late = cluster.not_ready(["w1", "w2"])
    assert not late, late
    cams = ["a", "b", "c"]
    for cam in cams:
        cluster.camera(cam, "demo", "--fps", "5")
    assert wait_until(lambda: len(cameras_of(cluster, "w1", cams) + cameras_of(cluster, "w2", cams)) >= 3, 60)
    victim = "w1" if cameras_of(cluster, "w1", cams) else "w2"
    survivor = "w2" if victim == "w1" else "w1"
    moved = cameras_of(cluster, victim, cams)
    before = {c: total(cluster.metrics(survivor), FRAMES_IN, camera=c) for c in moved}
    cluster.procs[victim].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    def all_moved() -> bool:
        m = cluster.metrics(survivor)
        return all(total(m, FRAMES_IN, camera=c) > before[c] for c in moved)

    assert wait_until(all_moved, 10, 0.05)
    assert time.monotonic() - killed_at <= 3.0, f"cameras {moved} took {time.monotonic() - killed_at:.2f} s to move"


def test_restarted_broker_is_rejoined_by_cameras_and_workers(cluster):
    cluster.broker()
    cluster.worker("w1")
    late = cluster.not_ready(["w1"])
    assert not late, late
    cluster.camera("cam", "demo", "--fps", "5")
    assert wait_until(lambda: total(cluster.metrics("w1"), FRAMES_IN, camera="cam") > 3, 60)
    camera_pid = cluster.procs["cam"].pid
    cluster.stop("broker", signal.SIGKILL)
    time.sleep(2.0)  # longer than DEAD_AFTER_S: both sides notice the broker is gone
    seen = total(cluster.metrics("w1"), FRAMES_IN, camera="cam")
    cluster.broker()
    assert wait_until(lambda: total(cluster.metrics("w1"), FRAMES_IN, camera="cam") > seen + 3, 20), \
        cluster.log("cam")[-2000:]
    assert cluster.procs["cam"].poll() is None and cluster.procs["cam"].pid == camera_pid
    assert total(cluster.metrics("broker"), FRAMES_IN, camera="cam") > 0


def bad_messages(n: int, seed: int = 1) -> list[list[bytes]]:
    """Random bytes, msgpack of the wrong shape, truncated and bit-flipped valid frames, extra frames."""
    rng = random.Random(seed)
    good = encode(Frame(camera_id="fuzz", seq=1, capture_ts=time.time(), send_ts=time.time(), width=8, height=8,
                        jpeg=b"\xff\xd8\xff" + bytes(64)))
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            out.append([rng.randbytes(rng.randint(0, 200))])
        elif kind == 1:
            out.append([msgpack.packb({"v": rng.choice([0, 1, 2, 99]), "t": rng.choice(["frame", "x", 3])})])
        elif kind == 2:
            out.append([good[: rng.randint(0, len(good) - 1)]])
        elif kind == 3:
            data = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            out.append([bytes(data)])
        else:
            out.append([good, rng.randbytes(8)])
    return out


def test_10000_bad_messages_into_a_worker_are_all_counted_and_it_keeps_serving(cluster):
    """The test plays the broker: a ROUTER on the backend endpoint the worker connects to."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.SNDHWM, 0)  # queue every message for the worker: a ROUTER drops at its high-water mark
    router.bind(cluster.endpoint("backend"))
    try:
        cluster.worker("w1")
        assert router.poll(60_000), cluster.log("w1")[-2000:]
        identity, first = router.recv_multipart()
        assert isinstance(decode(first, 1 << 20), Heartbeat)
        messages = bad_messages(10_000)
        for parts in messages:
            router.send_multipart([identity, *parts])

        def counted() -> float:
            m = cluster.metrics("w1")
            return total(m, PROTOCOL_ERRORS) + total(m, FRAMES_IN)

        assert wait_until(lambda: counted() == 10_000, 60, 0.5), counted()
        assert cluster.procs["w1"].poll() is None
        while router.poll(100):
            router.recv_multipart()
        assert router.poll(3000), "the worker stopped heartbeating"
        assert isinstance(decode(router.recv_multipart()[1], 1 << 20), Heartbeat)
    finally:
        router.close(0)


def test_curve_only_allow_listed_camera_processes_are_served(tmp_path, demo_gallery):
    from shared.keys import generate_keys

    allowed = tmp_path / "allowed"
    broker_keys, good_keys = generate_keys("broker", tmp_path / "broker"), generate_keys("good", allowed)
    broker_public, broker_secret = broker_keys.public, broker_keys.secret
    good_public, good_secret = good_keys.public, good_keys.secret
    rogue_secret = generate_keys("rogue", tmp_path / "elsewhere").secret
    worker_secret = generate_keys("w1", tmp_path / "workers").secret
    security = {"curve": True, "broker_secret_key": str(broker_secret), "broker_public_key": str(broker_public),
                "allowed_keys_dir": str(allowed), "camera_secret_key": str(good_secret),
                "worker_keys_dir": str(tmp_path / "workers"), "worker_secret_key": str(worker_secret)}
    cluster = Cluster(tmp_path, demo_gallery, extra={"security": security})
    try:
        cluster.broker()
        cluster.worker("w1")
        late = cluster.not_ready(["w1"])
        assert not late, late
        cluster.camera("good", "demo", "--fps", "5")
        rogue_cfg = tmp_path / "rogue.yaml"
        rogue_cfg.write_text(cluster.config.read_text().replace(str(good_secret), str(rogue_secret)))
        plain_cfg = tmp_path / "plain.yaml"
        plain_cfg.write_text(cluster.config.read_text().replace("curve: true", "curve: false"))
        for name, cfg in (("rogue", rogue_cfg), ("plain", plain_cfg)):
            cluster.config, saved = cfg, cluster.config
            cluster.camera(name, "demo", "--fps", "5")
            cluster.config = saved
        assert wait_until(lambda: total(cluster.metrics("w1"), FRAMES_IN, camera="good") > 3, 60)
        refused = "argusnet_auth_refused_total"
        assert wait_until(lambda: total(cluster.metrics("broker"), refused, reason="unknown_key") > 0, 10)
        assert wait_until(lambda: total(cluster.metrics("broker"), refused) >= 2, 10), cluster.metrics("broker").get(refused)
        time.sleep(1.0)
        m = cluster.metrics("w1")
        assert total(m, FRAMES_IN, camera="rogue") == 0 and total(m, FRAMES_IN, camera="plain") == 0
        assert total(cluster.metrics("broker"), FRAMES_IN, camera="rogue") == 0
    finally:
        cluster.close()


def start_up(tmp_path, gallery, config_after_up: bool = False) -> tuple[Cluster, subprocess.Popen, Path]:
    """`argusnet up` with one worker and the demo camera on ports of its own; events to events.jsonl. The
    configuration is given before `up` (``argusnet --config F up``) or after it (``argusnet up --config F``)."""
    cluster = Cluster(tmp_path, gallery, extra={"up": {"workers": 1}})
    events = tmp_path / "events.jsonl"
    config = ["--config", str(cluster.config)]
    command = ["up", *config] if config_after_up else [*config, "up"]
    proc = subprocess.Popen([sys.executable, "-m", "argusnet", *command, "--events-jsonl", str(events), "--logs",
                             str(tmp_path / "logs")], cwd=REPO, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return cluster, proc, events


def kill_up(proc: subprocess.Popen) -> None:
    """After a failed test: `up` and every child it started (one process group), so none outlives the test."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def event_records(path: Path) -> list[dict]:
    """The events the printer has written so far (a last line still being written is left for the next look)."""
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def test_up_runs_everything_and_stops_cleanly_on_ctrl_c(tmp_path):
    """`up --config F` with the configured demo camera and a store nobody made yet: the demo gallery is created."""
    gallery = tmp_path / "new-gallery"
    cluster, proc, events = start_up(tmp_path, gallery, config_after_up=True)
    try:
        def identified() -> bool:
            return any(e["type"] == "track_identified" for e in event_records(events))

        assert wait_until(identified, 90, 0.5), (tmp_path / "logs" / "worker-1.log").read_text()[-2000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        left = subprocess.run(["pgrep", "-f", str(cluster.config)], capture_output=True, text=True)
        assert left.stdout.strip() == "", f"processes left running: {left.stdout}"
        err = proc.stderr.read()
        assert "metrics of broker: http://127.0.0.1:" in err and "metrics of worker-1" in err
        assert "enrolled Eileen Collins" in err and f"crops: {gallery / 'crops'}/" in err
        assert f"event log: {gallery / 'store.sqlite'}" in err
        for name in ("broker", "worker-1", "camera-demo", "events"):
            assert (tmp_path / "logs" / f"{name}.log").exists()
        record = next(e for e in event_records(events) if e["type"] == "track_identified")
        assert record["name"] == "Eileen Collins" and record["camera"] == "demo" and record["similarity"] > 0.9
        assert {"type", "camera", "track", "name", "similarity", "ts"} <= set(record)
    finally:
        kill_up(proc)


def test_up_restarts_a_crashed_worker_and_events_continue(tmp_path, demo_gallery):
    cluster, proc, events = start_up(tmp_path, demo_gallery)

    def started() -> int:
        return sum(e["type"] == "track_started" for e in event_records(events))

    try:
        assert wait_until(lambda: started() >= 1, 90, 0.5)
        found = subprocess.run(["pgrep", "-f", f"{cluster.config} worker"], capture_output=True, text=True)
        worker_pids = found.stdout.split()
        assert len(worker_pids) == 1, found.stdout
        os.kill(int(worker_pids[0]), signal.SIGKILL)
        before = started()
        assert wait_until(lambda: started() > before, 60, 0.5), "no new track after the worker was restarted"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=40) == 0
        assert "worker-1 exited with code -9; restarting" in proc.stderr.read()
    finally:
        kill_up(proc)


def test_a_worker_runs_opencv_in_its_own_threads_by_default(cluster):
    cluster.broker()
    cluster.worker("w1")
    late = cluster.not_ready(["broker", "w1"])
    assert not late, late
    assert "OpenCV 1 thread(s)" in cluster.log("w1"), cluster.log("w1")[-2000:]


def test_fresh_processes_export_every_known_label_at_zero(cluster):
    """Before any error, every protocol error reason and event type is a series at 0 (a rate() or an alert sees
    it from the start); per-camera drop reasons appear with the camera's first frame."""
    from shared.metrics import BROKER_DROP_REASONS, CAMERA_DROP_REASONS, WORKER_DROP_REASONS
    from shared.protocol import EVENT_TYPES, REASONS

    cluster.broker()
    cluster.worker("w1")
    late = cluster.not_ready(["broker", "w1"])
    assert not late, late
    broker, worker = cluster.metrics("broker"), cluster.metrics("w1")
    for reason in (*REASONS, "bad_frames", "unexpected_message"):
        assert broker[PROTOCOL_ERRORS][(("reason", reason),)] == 0, reason
        assert worker[PROTOCOL_ERRORS][(("reason", reason),)] == 0, reason
    for kind in EVENT_TYPES:
        assert worker["argusnet_events_total"][(("type", kind),)] == 0, kind
    assert worker["argusnet_end_to_end_latency_seconds_count"][()] == 0
    assert worker["argusnet_track_lost_delay_seconds_count"][()] == 0
    assert set(broker["argusnet_auth_refused_total"].values()) == {0}
    assert_store_metrics_from_the_start(worker)
    cluster.camera("cam", "demo", "--fps", "5")
    late = cluster.not_ready(["cam"])
    assert not late, late
    camera = cluster.metrics("cam")
    for reason in CAMERA_DROP_REASONS:
        assert (("camera", "cam"), ("reason", reason)) in camera[DROPPED], reason
    assert camera[PROTOCOL_ERRORS][(("reason", "malformed"),)] == 0
    assert wait_until(lambda: total(cluster.metrics("w1"), FRAMES_IN, camera="cam") > 0, 60)
    broker, worker = cluster.metrics("broker"), cluster.metrics("w1")
    for name, reasons in ((broker, BROKER_DROP_REASONS), (worker, WORKER_DROP_REASONS)):
        for reason in reasons:
            assert (("camera", "cam"), ("reason", reason)) in name[DROPPED], reason


def assert_store_metrics_from_the_start(worker: dict) -> None:
    """The worker's store (store.buffered.BufferedStore) exports every operation and buffer kind from its start."""
    from shared import metrics as m

    for operation in m.STORE_OPERATIONS:
        assert (("operation", operation),) in worker[m.STORE_LATENCY + "_count"], operation
        assert (("operation", operation),) in worker[m.STORE_ERRORS], operation
    for kind in m.STORE_BUFFER_KINDS:
        assert worker[m.STORE_BUFFER_DEPTH][(("kind", kind),)] == 0, kind
        assert worker[m.STORE_DROPPED][(("kind", kind),)] == 0, kind
    assert 0 <= worker[m.STORE_REPLICA_LAG][()] < 60


def test_a_second_up_on_the_same_ports_exits_2_at_once(tmp_path, demo_gallery, cli):
    cluster, first, _events = start_up(tmp_path, demo_gallery)
    try:
        assert wait_until(lambda: bool(cluster.metrics("broker")) or first.poll() is not None, 60, 0.2)
        assert first.poll() is None
        second_events = tmp_path / "second.jsonl"
        started = time.monotonic()
        r = cli("up", "--config", cluster.config, "--events-jsonl", second_events, timeout=60)
        assert r.code == 2, r.err
        assert time.monotonic() - started < 30
        assert f"broker.frontend {cluster.endpoint('frontend')} is in use" in r.err, r.err
        assert "argusnet up:" not in r.err and "Traceback" not in r.err and not second_events.exists()
        assert first.poll() is None, "the first `up` was disturbed"
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=40) == 0
    finally:
        kill_up(first)


def test_up_refuses_bad_cameras_and_a_metrics_port_in_use_before_starting_anything(tmp_path, demo_gallery, cli):
    import socket

    missing = tmp_path / "missing.mp4"
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        cases = {
            f"up.cameras[1].source {str(missing)!r}: the file does not exist": [
                {"id": "usb", "source": "0"}, {"id": "door", "source": str(missing)}],
            f"up.cameras[0].metrics_port {port} is in use": [{"id": "demo", "source": "demo", "metrics_port": port}],
            "up.cameras[1].id 'demo' is already the id of up.cameras[0]": [{"id": "demo", "source": "demo"}] * 2,
        }
        for i, (message, cameras) in enumerate(cases.items()):
            cluster = Cluster(tmp_path, demo_gallery, extra={"up": {"cameras": cameras}})
            events = tmp_path / f"events-{i}.jsonl"
            r = cli("up", "--config", cluster.config, "--events-jsonl", events, timeout=60)
            assert r.code == 2 and message in r.err, r.err
            assert "argusnet up:" not in r.err and "Traceback" not in r.err and not events.exists()
