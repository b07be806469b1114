"""ZeroMQ endpoints, socket options and heartbeat constants in one place (every process uses these).

Heartbeats follow the zguide's paranoid-pirate pattern: every peer sends a heartbeat every
``HEARTBEAT_INTERVAL_S`` and considers the other side dead after ``HEARTBEAT_LIVENESS`` silent intervals.
"""

from __future__ import annotations

import ipaddress

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

ENDPOINT_SCHEMES = ("tcp://", "ipc://", "inproc://")
ENDPOINT_SEPARATOR = ","  # `--broker tcp://a:5555,tcp://b:5555`: several brokers, in failover order
MAX_ENDPOINTS = 16  # brokers one camera or worker may be given


def parse_endpoints(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Endpoints from a comma-separated string or a list: each ``tcp://``, ``ipc://`` or ``inproc://``, none
    repeated, 1 to MAX_ENDPOINTS of them. Raises ValueError saying what is wrong."""
    items = value.split(ENDPOINT_SEPARATOR) if isinstance(value, str) else list(value)
    endpoints = tuple(item.strip() for item in items)
    if not endpoints or any(not e for e in endpoints):
        raise ValueError(f"an empty endpoint in {value!r} (give ENDPOINT or ENDPOINT,ENDPOINT,...)")
    if len(endpoints) > MAX_ENDPOINTS:
        raise ValueError(f"{len(endpoints)} endpoints given, at most {MAX_ENDPOINTS}")
    for endpoint in endpoints:
        if not endpoint.startswith(ENDPOINT_SCHEMES) or len(endpoint) <= len(endpoint.split("://")[0]) + 3:
            raise ValueError(f"{endpoint!r} is not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME)")
    repeated = sorted({e for e in endpoints if endpoints.count(e) > 1})
    if repeated:
        raise ValueError(f"endpoint(s) given twice: {', '.join(repeated)}")
    return endpoints


def configure(sock: zmq.Socket, hwm: int = FRAME_HWM) -> zmq.Socket:
    """Apply the common options: no linger on close, bounded queues, fast reconnect with back-off."""
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)
    return sock


def off_loopback(endpoint: str) -> bool:
    """Whether ``endpoint`` reaches (connect) or is reachable from (bind) another machine: tcp:// with any host but a
    loopback address or ``localhost`` (the address after ZeroMQ's optional ``SOURCE;`` prefix; ``*``, an interface
    name or a host name count as off loopback). ipc:// and inproc:// never leave the machine."""
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(";")[2].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
