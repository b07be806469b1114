"""What every route of the dashboard shares: the store (behind one lock: the backends' objects are not shared
between threads), the users, the session signer, revocations and throttle, the audit log, the metrics and the
enrolment command.

Reads of one person's data (their timeline, faces, and the crops of tracks that carried their name) are audited as
``read`` records (subject: the name; details: ``kind`` timeline, faces or crop): at most one record per user,
subject and kind every ``READ_AUDIT_EVERY_S``, so a page that loads twenty faces writes one record, not twenty."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from dashboard.auth import LoginChecks, LoginThrottle, Revocations, SessionSigner
from dashboard.config import DashboardConfig
from dashboard.users import UserFile
from shared.errors import StoreError
from shared.logs import RateLimitedLog
from store.audit import AuditTrail
from store.base import Store

log = logging.getLogger(__name__)
T = TypeVar("T")
LOGIN_OUTCOMES = ("ok", "wrong", "throttled", "busy")
REFUSAL_REASONS = ("no_session", "not_admin", "csrf", "revoked", "body_too_large", "body_without_session")
READ_KINDS = ("timeline", "faces", "crop")
READ_AUDIT_EVERY_S = 60.0
MAX_READ_KEYS = 10000


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
        self.reads_audited = Counter("argusnet_dashboard_reads_audited_total", "Reads of a person's data written "
                                     "to the audit log, by kind (one per user, subject and kind a minute)",
                                     ["kind"], registry=registry)
        self.lagged = Counter("argusnet_dashboard_stream_lagged_total", "Live-stream clients dropped for falling "
                              "behind (they reconnect and catch up from the log)", registry=registry)
        for outcome in LOGIN_OUTCOMES:
            self.logins.labels(outcome=outcome)
        for reason in REFUSAL_REASONS:
            self.refused.labels(reason=reason)
        for kind in READ_KINDS:
            self.reads_audited.labels(kind=kind)


@dataclass(frozen=True)
class ReadKey:
    user: str
    subject: str
    kind: str


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
    revocations: Revocations
    crop_dir: Path | None = None
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: DashboardMetrics = field(init=False)
    login_checks: LoginChecks = field(init=False)
    _rate_log: RateLimitedLog = field(init=False)
    _reads: dict[ReadKey, float] = field(init=False, default_factory=dict)
    _reads_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.metrics = DashboardMetrics(self.registry)
        self.login_checks = LoginChecks(self.cfg.max_login_checks)
        self._rate_log = RateLimitedLog(log)

    def warn(self, key: str, msg: str, *args: object) -> None:
        """A warning logged at most once a minute per ``key``."""
        self._rate_log.warning(key, msg, *args)

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

    def fresh_read(self, user: str, kind: str, subject: str) -> bool:
        """Whether ``user`` has not read ``kind`` of ``subject`` within READ_AUDIT_EVERY_S (and marks it read)."""
        now = time.monotonic()
        key = ReadKey(user, subject, kind)
        with self._reads_lock:
            last = self._reads.get(key)
            if last is not None and now - last < READ_AUDIT_EVERY_S:
                return False
            if len(self._reads) >= MAX_READ_KEYS:
                self._reads = {k: t for k, t in self._reads.items() if now - t < READ_AUDIT_EVERY_S}
                if len(self._reads) >= MAX_READ_KEYS:  # a flood within a minute: start over (more records)
                    self._reads.clear()
            self._reads[key] = now
            return True

    def forget_read(self, user: str, kind: str, subject: str) -> None:
        """The read was not recorded after all: the next one tries again."""
        with self._reads_lock:
            self._reads.pop(ReadKey(user, subject, kind), None)

    def record_read(self, user: str, kind: str, subjects: set[str], **details: object) -> None:
        """An audit record of ``user`` reading ``kind`` of each of ``subjects`` (names), unless the same user read
        the same kind of the same subject less than READ_AUDIT_EVERY_S ago. StoreError when the log cannot be
        written (the caller refuses the read: no read of a person goes unrecorded)."""
        if self.audit is None:
            return
        for subject in sorted(subjects):
            if not self.fresh_read(user, kind, subject):
                continue
            try:
                self.audit.append(actor=f"dashboard:{user}", action="read", subject=subject,
                                  details={"kind": kind, **details})
            except (StoreError, OSError, ValueError):  # not recorded: the next read tries again
                self.forget_read(user, kind, subject)
                raise
            self.metrics.reads_audited.labels(kind=kind).inc()
