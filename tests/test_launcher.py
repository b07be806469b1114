"""`free_port`: ports a child can bind later, never one the kernel may hand to an outgoing connection meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
import zmq

from argusnet import launcher
from shared.errors import InputError


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = [launcher.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    low = launcher._ephemeral_low()
    assert all(launcher.PORT_FLOOR <= p < low for p in ports), (min(ports), max(ports), low)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_never_handed_out(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        monkeypatch.setattr(launcher, "PORT_FLOOR", taken)
        monkeypatch.setattr(launcher, "_ephemeral_low", lambda: taken + 1000)
        monkeypatch.setattr(launcher, "_issued", set())
        assert taken not in {launcher.free_port() for _ in range(100)}


def _late_metrics_child(port: int, delay_s: float) -> subprocess.Popen:
    """A real process that starts serving Prometheus metrics on ``port`` after ``delay_s`` (a worker loading)."""
    code = ("import time, prometheus_client; time.sleep(%r); prometheus_client.start_http_server(%d, '127.0.0.1'); "
            "time.sleep(60)" % (delay_s, port))
    return subprocess.Popen([sys.executable, "-c", code])


def test_the_next_stage_waits_until_a_worker_serves_its_metrics_or_exits():
    port = launcher.free_port()
    child = launcher._Child(launcher.ChildSpec("worker-1", ("worker",), 1, port, wait_ready=True))
    supervisor = launcher.Supervisor([child.spec], None, None, "INFO")
    child.proc = _late_metrics_child(port, 1.5)
    try:
        start = time.monotonic()
        supervisor._wait_ready([child], threading.Event())
        assert time.monotonic() - start >= 1.4 and launcher._serves_metrics(port)
    finally:
        child.proc.kill()
        child.proc.wait()
    start = time.monotonic()
    supervisor._wait_ready([child], threading.Event())  # exited: nothing to wait for
    assert time.monotonic() - start < 1.0


def test_tcp_endpoints_are_parsed_for_the_port_check():
    assert launcher.tcp_listen("broker.frontend", "tcp://127.0.0.1:5555") == launcher.Listen(
        "broker.frontend", "tcp://127.0.0.1:5555", "127.0.0.1", 5555)
    assert launcher.tcp_listen("f", "tcp://*:5555").host == "0.0.0.0"
    assert launcher.tcp_listen("f", "tcp://[::1]:5555").host == "::1"
    for endpoint in ("ipc:///tmp/x", "inproc://x", "tcp://127.0.0.1:*", "tcp://127.0.0.1:!"):
        assert launcher.tcp_listen("f", endpoint) is None, endpoint


def test_a_port_a_zmq_socket_listens_on_is_refused_naming_the_field():
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    try:
        port = router.bind_to_random_port("tcp://127.0.0.1")
        taken = launcher.tcp_listen("broker.frontend", f"tcp://127.0.0.1:{port}")
        everywhere = launcher.tcp_listen("broker.events_out", f"tcp://*:{port}")
        for address in (taken, everywhere):
            with pytest.raises(InputError, match=rf"{address.field} tcp://.*:{port} is in use"):
                launcher.check_listen([address])
    finally:
        router.close()
        ctx.term()
    launcher.check_listen([taken])  # free again: a closed socket leaves no listener behind


def test_two_servers_on_one_port_are_refused_before_either_starts():
    port = launcher.free_port()
    a = launcher.tcp_listen("broker.frontend", f"tcp://127.0.0.1:{port}")
    b = launcher.Listen("up.cameras[0].metrics_port", str(port), "127.0.0.1", port)
    with pytest.raises(InputError, match=r"up\.cameras\[0\]\.metrics_port .* is also broker\.frontend"):
        launcher.check_listen([a, b])
