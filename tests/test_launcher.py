"""`free_port`: ports a child can bind later, never one the kernel may hand to an outgoing connection meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

from argusnet import launcher


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
