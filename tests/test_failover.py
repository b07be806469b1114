"""Broker failover with real processes on 127.0.0.1: two brokers, one worker serving both, two cameras given both
endpoints; the first broker is SIGKILLed mid-stream and every camera's frames reach the worker again within 3 s
through the second, with no camera restarted and each camera on one worker."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError

from argusnet.launcher import free_port
from broker.config import BrokerConfig
from store import GalleryConfig, LocalStoreConfig, open_store
from store.types import EventQuery
from tests.processes import REPO, Cluster, total, wait_until

pytestmark = pytest.mark.slow

FRAMES_IN = "argusnet_frames_in_total"
FAILOVERS = "argusnet_camera_failovers_total"
MOVE_WITHIN_S = 3.0  # the bound: DEAD_AFTER_S (1.5 s) to notice, then reconnect and credits
IN_FLIGHT_S = 0.3  # after the kill, frames already on their way from the dead broker land within this
CAMERAS = ("file1", "demo1")


@pytest.fixture(scope="module")
def demo_gallery(tmp_path_factory, engine):
    from argusnet.commands.demo import enrol_demo_person

    directory = tmp_path_factory.mktemp("failover") / "gallery"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    return directory


@pytest.fixture
def cluster(tmp_path, demo_gallery):
    c = Cluster(tmp_path, demo_gallery)
    yield c
    c.close()


def second_broker(cluster: Cluster) -> dict[str, str]:
    """Start broker B on its own ports; returns its endpoints by name."""
    names = ("frontend", "backend", "events_in", "events_out")
    endpoints = {name: f"tcp://127.0.0.1:{free_port()}" for name in names}
    port = free_port()
    cluster.metrics_ports["broker2"] = port
    args = [arg for name in names for arg in (f"--{name.replace('_', '-')}", endpoints[name])]
    cluster.start("broker2", "broker", *args, "--metrics-port", str(port), metrics=False)
    return endpoints


def frames_in(cluster: Cluster, camera: str) -> float:
    return total(cluster.metrics("w1"), FRAMES_IN, camera=camera)


def test_cameras_fail_over_to_the_second_broker_within_3_s(cluster, data_dir, demo_gallery):
    arcade = str(data_dir / "facenet-pytorch" / "arcade.mp4")
    cluster.broker()
    b = second_broker(cluster)
    late = cluster.not_ready(["broker", "broker2"])
    assert not late, late
    cluster.start("w1", "worker", "--id", "w1", "--backend", f"{cluster.endpoint('backend')},{b['backend']}",
                  "--events-in", f"{cluster.endpoint('events_in')},{b['events_in']}")
    late = cluster.not_ready(["w1"])
    assert not late, late
    brokers = f"{cluster.endpoint('frontend')},{b['frontend']}"
    for name, source in zip(CAMERAS, (arcade, "demo")):
        cluster.start(name, "camera", "--id", name, "--source", source, "--fps", "5", "--broker", brokers)
    assert wait_until(lambda: all(frames_in(cluster, c) > 3 for c in CAMERAS), 60, 0.2), \
        "\n".join(cluster.log(c)[-1500:] for c in CAMERAS)
    assert all(total(cluster.metrics("broker"), FRAMES_IN, camera=c) > 0 for c in CAMERAS), "not via broker A"
    pids = {c: cluster.procs[c].pid for c in CAMERAS}

    cluster.procs["broker"].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    time.sleep(IN_FLIGHT_S)
    before = {c: frames_in(cluster, c) for c in CAMERAS}
    assert wait_until(lambda: all(frames_in(cluster, c) > before[c] for c in CAMERAS), 10, 0.05), \
        "\n".join(cluster.log(c)[-1500:] for c in (*CAMERAS, "w1"))
    took = time.monotonic() - killed_at
    assert took <= MOVE_WITHIN_S, f"the cameras took {took:.2f} s to reach the worker again"

    for c in CAMERAS:
        assert cluster.procs[c].poll() is None and cluster.procs[c].pid == pids[c], f"camera {c} restarted"
        assert total(cluster.metrics(c), FAILOVERS, camera=c) == 1
        assert total(cluster.metrics("broker2"), FRAMES_IN, camera=c) > 0, f"camera {c} not via broker B"
    for c in CAMERAS:
        assert cluster.stop(c) == 0
    assert cluster.stop("w1") == 0
    assert cluster.stop("broker2") == 0
    assert_one_worker_per_camera(demo_gallery)


def assert_one_worker_per_camera(gallery) -> None:
    """Every event a camera caused, before and after the failover, was logged by one worker."""
    store = open_store(LocalStoreConfig(path=gallery), GalleryConfig())
    try:
        workers: dict[str, set[str | None]] = {}
        for logged in store.events.query(EventQuery(limit=10_000, oldest_first=True)):
            workers.setdefault(logged.event.camera, set()).add(logged.worker)
    finally:
        store.close()
    for camera, seen in workers.items():
        assert seen == {"w1"}, f"camera {camera}'s events came from {seen}"


def test_endpoint_lists_are_validated_in_the_configuration_and_on_the_command_line(tmp_path):
    cfg = BrokerConfig(camera_brokers=["tcp://a:1", "tcp://b:1"])
    assert cfg.camera_endpoints() == ("tcp://a:1", "tcp://b:1")
    assert cfg.backend_endpoints() == (cfg.backend,) and cfg.events_in_endpoints() == (cfg.events_in,)
    for bad, reason in ((["tcp://a:1", "tcp://a:1"], "given twice"), (["http://a:1"], "not a ZeroMQ endpoint"),
                        ([""], "empty endpoint")):
        with pytest.raises(ValidationError, match=reason):
            BrokerConfig(worker_backends=bad)
    r = subprocess.run([sys.executable, "-m", "argusnet", "camera", "--id", "c", "--source", "demo", "--broker",
                        "tcp://127.0.0.1:1,"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "empty endpoint" in r.stderr, r.stderr
