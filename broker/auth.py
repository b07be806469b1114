"""CurveZMQ on the broker's camera-facing socket: the ZAP allow-list and the counting of refused nodes.

With ``security.curve`` the frontend ROUTER is a CURVE server (the broker's secret key) and a ZAP handler
(``zmq.auth.thread.ThreadAuthenticator`` with a credentials callback) accepts only client public keys found in
``security.allowed_keys_dir``. Refusals are counted in ``argusnet_auth_refused_total{reason}`` and logged once per
reason per minute:

- ``unknown_key``: a CURVE client whose public key is not on the allow-list (seen by the ZAP callback);
- ``mechanism_mismatch``: a plain-text (NULL) node, or one with another mechanism; ZeroMQ refuses it during the
  handshake, before ZAP is asked, so it is seen through a socket monitor on the frontend;
- ``handshake_aborted``: the node closed the connection during the handshake. A plain-text node shows up as this
  or as ``mechanism_mismatch``, depending on which side notices the mismatch first (the node then gives up: a
  ZeroMQ client does not reconnect after a handshake protocol error);
- ``handshake``: any other handshake failure reported by that monitor (bad CURVE handshake, ZAP error).
"""

from __future__ import annotations

import logging

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


class AllowList:
    """ZAP credentials provider: ``callback(domain, key)`` accepts exactly the Z85 public keys it was given."""

    def __init__(self, keys: dict[bytes, str], metrics: BrokerMetrics, rate_log: RateLimitedLog) -> None:
        self.keys = dict(keys)
        self.metrics = metrics
        self.rate_log = rate_log

    def callback(self, domain: str, key: bytes) -> bool:
        """Called by the authenticator thread for each CURVE handshake."""
        name = self.keys.get(key)
        if name is not None:
            log.debug("CURVE key of %s accepted (domain %r)", name, domain)
            return True
        self.metrics.auth_refused.labels(reason="unknown_key").inc()
        self.rate_log.warning("auth:unknown_key", "refused a camera node with a public key not in the allow-list: "
                              "%s", key.decode("ascii", "replace"))
        return False


class FrontendSecurity:
    """CURVE server set-up, ZAP handler and handshake monitor for the frontend socket (when curve is on)."""

    def __init__(self, ctx: zmq.Context, security: SecurityConfig, metrics: BrokerMetrics,
                 rate_log: RateLimitedLog) -> None:
        if security.broker_secret_key is None:
            raise ConfigError("security.broker_secret_key is required when security.curve is on "
                              "(make one with `argusnet keys gen broker --dir DIR`)")
        if security.allowed_keys_dir is None:
            raise ConfigError("security.allowed_keys_dir is required when security.curve is on "
                              "(a folder of the camera nodes' .key files)")
        keys = load_secret_key(security.broker_secret_key)
        self.public, self.secret = keys.public, keys.secret
        keys = load_public_keys(security.allowed_keys_dir)
        if not keys:
            log.warning("allowed keys folder %s holds no .key file: every camera node will be refused",
                        security.allowed_keys_dir)
        self.metrics = metrics
        self.rate_log = rate_log
        self.allow_list = AllowList(keys, metrics, rate_log)
        self.authenticator = zmq.auth.thread.ThreadAuthenticator(ctx, log=logging.getLogger(__name__ + ".zap"))
        self.authenticator.start()
        self.authenticator.configure_curve_callback("*", credentials_provider=self.allow_list)
        self.monitor: zmq.Socket | None = None
        log.info("CurveZMQ on: %d camera key(s) allowed from %s", len(keys), security.allowed_keys_dir)

    def secure(self, sock: zmq.Socket) -> zmq.Socket:
        """Make ``sock`` a CURVE server (call before bind) and start monitoring its handshakes; returns the monitor."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True
        self.monitor = sock.get_monitor_socket(MONITORED)
        return self.monitor

    def on_monitor(self) -> None:
        """Read the pending handshake events of the monitor; count and log the refusals."""
        if self.monitor is None:
            return
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            kind, value = event["event"], int(event["value"])
            log.debug("frontend handshake event %r value %d", kind, value)
            if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == ZAP_REFUSED:
                continue  # an unknown key: the ZAP callback has counted it
            if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and \
                    value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                reason, what = "mechanism_mismatch", "a plain-text node (or another mechanism than CURVE)"
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
                reason, what = "handshake_aborted", f"a node that left during the handshake (errno {value}; " \
                    "a plain-text node that saw the mechanism mismatch first)"
            else:
                reason, what = "handshake", f"a failed handshake (event {kind!r}, value {value})"
            self.metrics.auth_refused.labels(reason=reason).inc()
            self.rate_log.warning("auth:" + reason, "refused %s on the camera socket", what)

    def close(self, sock: zmq.Socket | None) -> None:
        """Stop monitoring ``sock`` and stop the ZAP handler."""
        if self.monitor is not None:
            if sock is not None and not sock.closed:
                sock.disable_monitor()
            self.monitor.close(0)
            self.monitor = None
        self.authenticator.stop()
