"""The one retention job: on a timer, forget visitors not seen for ``visitors.retention_h`` (and delete the faces a
merge kept aside for an unmerge that long after the merge: the merge stands, it can no longer be undone; those are
not counted in the report), delete crops older
than ``retention.crops_h`` and events older than ``retention.events_days``, drop expired live tracks and camera previews (kept
for ``worker.preview_ttl_s`` after the last refresh), and delete
the oldest crops while all of them take more than ``retention.media_budget_bytes``.

The worker runs it in its own thread (``RetentionJob.start``); every worker sharing a store may run it, since each
step is idempotent. Nothing else deletes data on a schedule."""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import CollectorRegistry, Counter

from shared import metrics as m
from store.base import Store
from store.config import RetentionConfig, VisitorConfig
from store.types import RetentionReport

log = logging.getLogger(__name__)
KINDS = ("visitors", "crops", "events", "live_tracks", "crops_budget", "previews")


class RetentionJob:
    def __init__(self, store: Store, retention: RetentionConfig, visitors: VisitorConfig,
                 registry: CollectorRegistry | None = None) -> None:
        self.store = store
        self.retention = retention
        self.visitors = visitors
        self.removed = Counter(m.RETENTION_REMOVED, "Records removed by the retention job", ["kind"],
                               registry=registry) if registry is not None else None
        if self.removed is not None:
            for kind in KINDS:
                self.removed.labels(kind=kind)
        self._thread: threading.Thread | None = None

    def run_once(self, now: float | None = None) -> RetentionReport:
        now = time.time() if now is None else now
        gone = self.store.visitors.expire(older_than=now - self.visitors.retention_h * 3600.0)
        report = RetentionReport(
            visitors=len(gone),
            crops=self.store.media.expire(older_than=now - self.retention.crops_h * 3600.0),
            events=self.store.events.expire(older_than=now - self.retention.events_days * 86400.0),
            live_tracks=self.store.live.expire(now),
            previews=self.store.live.expire_cameras(now),
            crops_budget=self.store.media.trim_to(self.retention.media_budget_bytes))
        if self.removed is not None:
            for kind in KINDS:
                self.removed.labels(kind=kind).inc(getattr(report, kind))
        if report.total():
            log.info("retention removed %d visitor(s), %d crop(s) (and %d over the budget), %d event(s), %d live "
                     "track(s)", report.visitors, report.crops, report.crops_budget, report.events, report.live_tracks)
        return report

    def run(self, stop: threading.Event) -> None:
        """Run now and then every ``retention.interval_s`` until ``stop`` is set; a failed run is logged with its
        traceback and retried at the next interval."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:  # a failed run (a locked database, a full disk) must not end the job
                log.warning("retention run failed; retrying in %.0f s", self.retention.interval_s, exc_info=True)
            stop.wait(self.retention.interval_s)

    def start(self, stop: threading.Event) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, args=(stop,), name="retention", daemon=True)
        self._thread.start()
        return self._thread
