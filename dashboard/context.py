"""What every route of the dashboard shares: the store (behind one lock: the backends' objects are not shared
between threads), the users, the session signer and throttle, the audit log, the metrics and the enrolment
command."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from dashboard.auth import LoginThrottle, SessionSigner
from dashboard.config import DashboardConfig
from dashboard.users import UserFile
from shared.logs import RateLimitedLog
from store.audit import AuditTrail
from store.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
LOGIN_OUTCOMES = ("ok", "wrong", "throttled")
REFUSAL_REASONS = ("no_session", "not_admin", "csrf")


class DashboardMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.logins = Counter("argusnet_dashboard_logins_total", "Login attempts by outcome", ["outcome"],
                              registry=registry)
        self.refused = Counter("argusnet_dashboard_refused_total", "Requests refused (401/403) by reason",
                               ["reason"], registry=registry)
        self.actions = Counter("argusnet_dashboard_actions_total", "Admin actions done, by action", ["action"],
                               registry=registry)
        self.store_errors = Counter("argusnet_dashboard_store_errors_total", "Store reads or writes that failed",
                                    registry=registry)
        self.clients = Gauge("argusnet_dashboard_stream_clients", "Browsers connected to the live stream",
                             registry=registry)
        self.lagged = Counter("argusnet_dashboard_stream_lagged_total", "Live-stream clients dropped for falling "
                              "behind (they reconnect and catch up from the log)", registry=registry)
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome=outcome)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason=reason)


@dataclass(frozen=True)
class CliCommand:
    """`argusnet` as a child process on the dashboard's store: ``base`` the interpreter, module and global options
    (``--config``), ``store_args`` the options naming the store (``--gallery``)."""

    base: tuple[str, ...]
    store_args: tuple[str, ...] = ()

    def command(self, *words: str) -> list[str]:
        """The command ``words`` (e.g. "enroll"), with the store's options after them."""
        return [*self.base, *words, *self.store_args]


@dataclass
class Dashboard:
    store: Store
    users: UserFile
    signer: SessionSigner
    cfg: DashboardConfig
    cameras: list[str]
    audit: AuditTrail | None
    cli: CliCommand  # how this dashboard runs `argusnet` commands on its store (enrolment, "not this person")
    registry: CollectorRegistry
    crop_dir: Path | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: DashboardMetrics = field(init=False)
    _rate_log: RateLimitedLog = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = DashboardMetrics(self.registry)
        self._rate_log = RateLimitedLog(log)

    def db(self, fn: Callable[..., T], *args: object) -> T:
        """One store call under the store lock."""
        with self.lock:
            return fn(*args)

    def store_failed(self, exc: Exception) -> None:
        self.metrics.store_errors.inc()
        self._rate_log.warning("store", "store %s failed: %s", self.store.describe(), exc)

    def record(self, actor: str, action: str, subject: str | None, **details: object) -> None:
        """An audit record of a change made through the dashboard, in the store's audit log."""
        if self.audit is not None:
            self.audit.append(actor=actor, action=action, subject=subject, details=dict(details))
