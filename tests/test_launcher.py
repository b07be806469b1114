"""`free_port`: ports a child can bind later, never one the kernel may hand to an outgoing connection meanwhile."""

from __future__ import annotations

import socket

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
