"""CurveZMQ on every broker socket: the ZAP allow-lists, the camera id each camera key may send as, and the counting
of refused peers.

With ``security.curve`` each of the broker's four sockets is a CURVE server (the broker's secret key) in a ZAP
domain of its own, and a ZAP handler (``zmq.auth.thread.ThreadAuthenticator`` with one credentials callback per
domain) accepts only the client public keys of that socket's allow-list:

- frontend (5555, cameras): ``security.allowed_keys_dir``;
- backend (5556, workers): ``security.worker_keys_dir`` (required);
- events_in (5557, event publishers): ``security.publisher_keys_dir``, else the worker keys (workers publish);
- events_out (5558, event subscribers): ``security.subscriber_keys_dir``, else nobody.

A camera key is bound to camera ids: the ids ``security.camera_keys`` gives its key name, else the one id of its
file's name (``cam-front.key``: ``cam-front``). ZAP hands the broker the client's public key as each message's
``User-Id`` property (pyzmq's default ``curve_user_id``: the Z85 key), so ``camera_ids`` tells the broker which ids a
connection may send as. Refusals are counted in ``argusnet_auth_refused_total{reason}`` and logged once per reason
per minute:

- ``unknown_key`` / ``unknown_worker_key`` / ``unknown_publisher_key`` / ``unknown_subscriber_key``: a CURVE
  client whose public key is not on that socket's allow-list (seen by the ZAP callback);
- ``camera_id_mismatch``: an allow-listed camera key that sent a frame or heartbeat as another camera's id (counted
  by the broker, ``broker.server``);
- ``mechanism_mismatch``: a plain-text (NULL) peer, or one with another mechanism; ZeroMQ refuses it during the
  handshake, before ZAP is asked, so it is seen through a socket monitor;
- ``handshake_aborted``: the peer closed the connection during the handshake. A plain-text peer shows up as this
  or as ``mechanism_mismatch``, depending on which side notices the mismatch first (the peer then gives up: a
  ZeroMQ client does not reconnect after a handshake protocol error);
- ``handshake``: any other handshake failure reported by that monitor (bad CURVE handshake, ZAP error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth.thread
from zmq.utils.monitor import recv_monitor_message

from broker.metrics import BrokerMetrics
from shared.errors import ConfigError
from shared.keys import SecurityConfig, load_public_keys, load_secret_key
from shared.logs import RateLimitedLog

log = logging.getLogger(__name__)

MONITORED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH | \
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
ZAP_REFUSED = 400  # ZAP status code of a refusal (already counted by the callback)


@dataclass(frozen=True)
class Guard:
    """What guards one broker socket: its ZAP domain, the refusal reason of an unknown key, and who connects."""

    domain: str
    reason: str
    who: str


GUARDS = {
    "frontend": Guard("cameras", "unknown_key", "a camera node"),
    "backend": Guard("workers", "unknown_worker_key", "a worker"),
    "events_in": Guard("publishers", "unknown_publisher_key", "an event publisher"),
    "events_out": Guard("subscribers", "unknown_subscriber_key", "an event subscriber"),
}


class AllowList:
    """ZAP credentials provider: ``callback(domain, key)`` accepts exactly the Z85 public keys it was given."""

    def __init__(self, keys: dict[bytes, str], guard: Guard, metrics: BrokerMetrics,
                 rate_log: RateLimitedLog) -> None:
        self.keys = dict(keys)
        self.guard = guard
        self.metrics = metrics
        self.rate_log = rate_log

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator thread for each CURVE handshake."""
        name = self.keys.get(key)
        if name is not None:
            log.debug("CURVE key of %s accepted (domain %r)", name, domain)
            return True
        self.metrics.auth_refused.labels(reason=self.guard.reason).inc()
        self.rate_log.warning("auth:" + self.guard.reason, "refused %s with a public key not in the %s allow-list: "
                              "%s", self.guard.who, self.guard.domain, key.decode("ascii", "replace"))
        return False


def camera_bindings(keys: dict[bytes, str], named: dict[str, list[str]]) -> dict[str, frozenset[str]]:
    """Z85 public key (text) -> the camera ids it may send as: ``named[key name]``, else its key name. ConfigError
    when ``named`` names a key that is not on the allow-list, or when two keys would send as one id."""
    missing = sorted(set(named) - set(keys.values()))
    if missing:
        raise ConfigError(f"security.camera_keys names key(s) {', '.join(missing)} that are not in "
                          "security.allowed_keys_dir (NAME.key files)")
    bound = {key.decode("ascii"): frozenset(named.get(name, [name])) for key, name in keys.items()}
    owner: dict[str, str] = {}
    for key, name in sorted(keys.items(), key=lambda item: item[1]):
        for camera in bound[key.decode("ascii")]:
            if owner.setdefault(camera, name) != name:
                raise ConfigError(f"camera id {camera!r} belongs to two camera keys, {owner[camera]}.key and "
                                  f"{name}.key (its file name or security.camera_keys): give it to one")
    return bound


def _allowed(folder: Path | None, setting: str, required: bool) -> dict[bytes, str]:
    if folder is None:
        if required:
            raise ConfigError(f"security.{setting} is required when security.curve is on (a folder of .key files "
                              "from `argusnet keys gen`)")
        return {}
    keys = load_public_keys(folder)
    if not keys:
        log.warning("%s folder %s holds no .key file: every peer of that socket will be refused", setting, folder)
    return keys


class BrokerSecurity:
    """CURVE server set-up, ZAP handler and handshake monitors for the broker's sockets (when curve is on)."""

    def __init__(self, ctx: zmq.Context, security: SecurityConfig, metrics: BrokerMetrics,
                 rate_log: RateLimitedLog) -> None:
        if security.broker_secret_key is None:
            raise ConfigError("security.broker_secret_key is required when security.curve is on "
                              "(make one with `argusnet keys gen --name broker --dir DIR`)")
        keys = load_secret_key(security.broker_secret_key)
        self.public, self.secret = keys.public, keys.secret
        cameras = _allowed(security.allowed_keys_dir, "allowed_keys_dir", True)
        workers = _allowed(security.worker_keys_dir, "worker_keys_dir", True)
        allowed = {"frontend": cameras, "backend": workers,
                   "events_in": workers if security.publisher_keys_dir is None else
                   _allowed(security.publisher_keys_dir, "publisher_keys_dir", True),
                   "events_out": _allowed(security.subscriber_keys_dir, "subscriber_keys_dir", False)}
        self.bindings = camera_bindings(cameras, security.camera_keys)
        self.metrics = metrics
        self.rate_log = rate_log
        self.monitors: dict[str, zmq.Socket] = {}
        self.authenticator = zmq.auth.thread.ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
        self.authenticator.start()
        for name, guard in GUARDS.items():
            self.authenticator.configure_curve_callback(
                guard.domain, credentials_provider=AllowList(allowed[name], guard, metrics, rate_log))
        log.info("CurveZMQ on every socket: %d camera, %d worker, %d publisher and %d subscriber key(s) allowed",
                 *(len(allowed[name]) for name in GUARDS))

    def camera_ids(self, user_id: str | None) -> frozenset[str]:
        """The camera ids the connection authenticated with ``user_id`` (its Z85 public key) may send as."""
        return self.bindings.get(user_id or "", frozenset())

    def secure(self, name: str, sock: zmq.Socket) -> zmq.Socket:
        """Make socket ``name`` a CURVE server in its ZAP domain (call before bind) and monitor its handshakes;
        returns the monitor."""
        sock.zap_domain = GUARDS[name].domain.encode()
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        self.monitors[name] = sock.get_monitor_socket(MONITORED)
        return self.monitors[name]

    def on_monitor(self, name: str) -> None:
        """Read the pending handshake events of socket ``name``'s monitor; count and log the refusals."""
        monitor = self.monitors.get(name)
        while monitor is not None and monitor.poll(0):
            event = recv_monitor_message(monitor, zmq.NOBLOCK)
            kind, value = event["event"], int(event["value"])
            log.debug("%s handshake event %r value %d", name, kind, value)
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == ZAP_REFUSED:
                continue  # an unknown key: the ZAP callback has counted it
            if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and \
                    value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                reason, what = "mechanism_mismatch", "a plain-text peer (or another mechanism than CURVE)"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                reason, what = "handshake_aborted", f"a peer that left during the handshake (errno {value}; " \
                    "a plain-text peer that saw the mechanism mismatch first)"
            else:
                reason, what = "handshake", f"a failed handshake (event {kind!r}, value {value})"
            self.metrics.auth_refused.labels(reason=reason).inc()
            self.rate_log.warning("auth:" + reason, "refused %s on the %s socket (%s)", what, name,
                                  GUARDS[name].who)

    def close(self, sockets: dict[str, zmq.Socket]) -> None:
        """Stop monitoring the sockets and stop the ZAP handler."""
        for name, monitor in self.monitors.items():
            sock = sockets.get(name)
            if sock is not None and not sock.closed:
                sock.disable_monitor()
            monitor.close(0)
        self.monitors.clear()
        self.authenticator.stop()
