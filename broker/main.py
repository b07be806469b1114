"""``argusnet broker``: run the broker as its own process until SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from typing import Protocol

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from broker.config import BrokerConfig
from broker.server import Broker
from shared.errors import ArgusError, ConfigError
from shared.keys import SecurityConfig
from shared.metrics import serve
from shared.protocol import ProtocolConfig
from shared.schema import format_validation_error
from shared.signals import stop_on_signals

log = logging.getLogger(__name__)

class BrokerSettings(Protocol):
    """The sections the broker reads from the composition root."""

    @property
    def broker(self) -> BrokerConfig: ...

    @property
    def security(self) -> SecurityConfig: ...

    @property
    def protocol(self) -> ProtocolConfig: ...


_OVERRIDES = ("frontend", "backend", "events_in", "events_out", "metrics_port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``argusnet broker``; each overrides the same field of the ``broker`` config section."""
    parser.add_argument("--frontend", metavar="ENDPOINT", help="ROUTER endpoint cameras connect to")
    parser.add_argument("--backend", metavar="ENDPOINT", help="ROUTER endpoint workers connect to")
    parser.add_argument("--events-in", metavar="ENDPOINT", help="XSUB endpoint workers publish events to")
    parser.add_argument("--events-out", metavar="ENDPOINT", help="XPUB endpoint event subscribers connect to")
    parser.add_argument("--metrics-port", metavar="PORT", type=int, help="Prometheus port (0 = any free port)")


def broker_config(args: argparse.Namespace, cfg: BrokerSettings) -> BrokerConfig:
    """``cfg.broker`` with the command-line overrides applied and validated."""
    data = cfg.broker.model_dump()
    data.update({k: getattr(args, k) for k in _OVERRIDES if getattr(args, k, None) is not None})
    try:
        return BrokerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "command line")) from exc


def run_from_args(args: argparse.Namespace, cfg: BrokerSettings) -> int:
    """Serve metrics, run the broker until SIGINT / SIGTERM, then close it. Returns the exit code (0)."""
    registry = CollectorRegistry()
    broker_cfg = broker_config(args, cfg)
    broker = Broker(broker_cfg, cfg.security, cfg.protocol, registry)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        try:
            port = serve(registry, broker_cfg.metrics_port, broker_cfg.metrics_host)
        except OSError as exc:
            raise ArgusError(f"broker: cannot serve metrics on port {broker_cfg.metrics_port}: {exc}") from exc
        ep = broker.endpoints
        print(f"broker {broker.incarnation}: cameras {ep['frontend']}, workers {ep['backend']}, events in "
              f"{ep['events_in']}, events out {ep['events_out']}, metrics "
              f"http://{broker_cfg.metrics_host}:{port}/metrics",
              file=sys.stderr, flush=True)
        broker.run(stop)
    finally:
        broker.close()
    return 0
