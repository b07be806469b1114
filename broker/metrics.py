"""The broker's Prometheus metrics, built on a process-local registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared import metrics as m

BROKER_STAGE = "broker"  # label of m.STAGE_LATENCY: frame received -> dispatched to a worker


class BrokerMetrics:
    """Every metric the broker exports. Per-camera children are cached (``labels()`` is slow on the hot path).
    Labelled counters exist at 0 for every known label value from the start (per camera: from its first frame)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_in = Counter(m.FRAMES_IN, "Frames received from cameras", ["camera"], registry=registry)
        self.frames_out = Counter(m.FRAMES_OUT, "Frames dispatched to workers", ["camera"], registry=registry)
        self.dropped = Counter(m.FRAMES_DROPPED, "Frames dropped by the broker", ["camera", "reason"],
                               registry=registry)
        self.protocol_errors = Counter(m.PROTOCOL_ERRORS, "Bad messages dropped", ["reason"], registry=registry)
        self.workers_alive = Gauge(m.WORKERS_ALIVE, "Live workers", registry=registry)
        self.worker_cameras = Gauge(m.WORKER_CAMERAS, "Cameras assigned per live worker", ["worker"],
                                    registry=registry)
        self.worker_credits = Gauge(m.WORKER_CREDITS, "Frames each live worker may still be sent", ["worker"],
                                    registry=registry)
        self.queue_depth = Gauge(m.BROKER_QUEUE_DEPTH, "Frames waiting at the broker per camera", ["camera"],
                                 registry=registry)
        self.latency = Histogram(m.STAGE_LATENCY, "Latency per stage", ["stage"], buckets=m.LATENCY_BUCKETS,
                                 registry=registry).labels(stage=BROKER_STAGE)
        self.auth_refused = Counter(m.AUTH_REFUSED, "Connections and messages refused by CurveZMQ authentication",
                                    ["reason"], registry=registry)
        self.uncredited = Counter(m.UNCREDITED_FRAMES, "Frames a camera sent without holding a credit", ["camera"],
                                  registry=registry)
        self._in: dict[str, Counter] = {}
        self._out: dict[str, Counter] = {}
        self._workers: set[str] = set()
        for reason in m.PROTOCOL_ERROR_REASONS:
            self.protocol_errors.labels(reason=reason)
        for reason in m.AUTH_REFUSED_REASONS:
            self.auth_refused.labels(reason=reason)

    def frame_in(self, camera: str) -> None:
        child = self._in.get(camera)
        if child is None:
            child = self._in[camera] = self.frames_in.labels(camera=camera)
            self._camera_first_seen(camera)
        child.inc()

    def _camera_first_seen(self, camera: str) -> None:
        self._out[camera] = self.frames_out.labels(camera=camera)
        self.uncredited.labels(camera=camera)
        for reason in m.BROKER_DROP_REASONS:
            self.dropped.labels(camera=camera, reason=reason)

    def frame_out(self, camera: str, seconds: float) -> None:
        child = self._out.get(camera)
        if child is None:
            child = self._out[camera] = self.frames_out.labels(camera=camera)
        child.inc()
        self.latency.observe(seconds)

    def drop(self, camera: str, reason: str, n: int = 1) -> None:
        self.dropped.labels(camera=camera, reason=reason).inc(n)

    def set_workers(self, load: dict[str, int], credits: dict[str, int]) -> None:
        """Export the live workers' camera counts and credits; drop the series of workers no longer alive."""
        self.workers_alive.set(len(load))
        for worker in self._workers - set(load):
            self.worker_cameras.remove(worker)
            self.worker_credits.remove(worker)
        for worker, count in load.items():
            self.worker_cameras.labels(worker=worker).set(count)
            self.worker_credits.labels(worker=worker).set(credits.get(worker, 0))
        self._workers = set(load)
