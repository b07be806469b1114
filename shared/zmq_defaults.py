"""ZeroMQ endpoints, socket options and heartbeat constants in one place (every process uses these).

Heartbeats follow the zguide's paranoid-pirate pattern: every peer sends a heartbeat every
``HEARTBEAT_INTERVAL_S`` and considers the other side dead after ``HEARTBEAT_LIVENESS`` silent intervals.
"""

from __future__ import annotations

import zmq

HEARTBEAT_INTERVAL_S = 0.5  # send a heartbeat this often
HEARTBEAT_LIVENESS = 3  # a peer silent for this many intervals is dead (1.5 s: cameras move within 3 s)
DEAD_AFTER_S = HEARTBEAT_INTERVAL_S * HEARTBEAT_LIVENESS

RECONNECT_IVL_MS = 100  # first reconnect attempt after a lost TCP connection
RECONNECT_IVL_MAX_MS = 2000  # reconnect back-off ceiling
FRAME_HWM = 8  # messages a socket queues per peer before it drops (PUB) or refuses (DEALER, non-blocking send)
CLOSE_LINGER_MS = 1000  # on a clean stop, a camera's last frames get this long to leave (else counted as sent
# but lost); every other close is immediate
EVENT_HWM = 10_000  # event sockets may queue more: events are small and must not be lost in bursts

DEFAULT_FRONTEND = "tcp://127.0.0.1:5555"  # broker ROUTER for camera nodes
DEFAULT_BACKEND = "tcp://127.0.0.1:5556"  # broker ROUTER for workers
DEFAULT_EVENTS_IN = "tcp://127.0.0.1:5557"  # broker XSUB: workers' PUB sockets connect here
DEFAULT_EVENTS_OUT = "tcp://127.0.0.1:5558"  # broker XPUB: dashboards and event printers subscribe here


def configure(sock: zmq.Socket, hwm: int = FRAME_HWM) -> zmq.Socket:
    """Apply the common options: no linger on close, bounded queues, fast reconnect with back-off."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    return sock
