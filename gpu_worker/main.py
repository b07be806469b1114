"""``argusnet worker``: one worker process (engine + store + frame processor + retention job + service) until
SIGINT / SIGTERM. The store is wrapped in `store.buffered.BufferedStore` (store metrics on the worker's registry;
writes buffered while the store is unavailable)."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Protocol

import cv2
from prometheus_client import CollectorRegistry

from broker.config import BrokerConfig
from gpu_worker.config import WorkerConfig, WorkerSettings
from gpu_worker.detect import build_detector
from gpu_worker.embed import build_embedder
from gpu_worker.engine import Engine
from gpu_worker.factory import build_processor
from gpu_worker.runtime import ProviderInfo, apply_opencv_threads, worker_runtime
from gpu_worker.service import WorkerService
from shared.errors import ArgusError
from shared.metrics import serve
from shared.keys import SecurityConfig
from shared.protocol import ProtocolConfig
from shared.signals import stop_on_signals
from store import open_store
from store.buffered import BufferedStore
from store.config import RedisStoreConfig, RetentionConfig, StoreConfig
from store.retention import RetentionJob

log = logging.getLogger(__name__)
RETENTION_JOIN_S = 10.0  # how long a stopping worker waits for a retention run in progress


class WorkerProcessSettings(WorkerSettings, Protocol):
    """Everything ``run_worker`` reads from the composition root."""

    @property
    def store(self) -> StoreConfig: ...

    @property
    def retention(self) -> RetentionConfig: ...

    @property
    def worker(self) -> WorkerConfig: ...

    @property
    def protocol(self) -> ProtocolConfig: ...

    @property
    def security(self) -> SecurityConfig: ...


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:40]
    return f"worker-{host}-{os.getpid()}"


def run_worker(cfg: WorkerProcessSettings, broker: BrokerConfig, worker_id: str, metrics_port: int) -> int:
    """Load the models, open the store, serve metrics, run the service and the retention job until a signal;
    returns the exit code."""
    runtime = worker_runtime(cfg.runtime, cfg.worker.detect_threads)
    apply_opencv_threads(runtime)
    engine = Engine(cfg, build_detector(cfg.detector, runtime), build_embedder(cfg.embedder, runtime))
    engine.warm_up()
    registry = CollectorRegistry()
    registry.register(ProviderInfo())  # the provider each model runs on (a fall-back to the CPU shows here)
    # writes wait (bounded, counted) while the store is unavailable; recognition goes on from the replica
    store_cfg = cfg.store.for_worker() if isinstance(cfg.store, RedisStoreConfig) else cfg.store  # short timeouts
    store = BufferedStore(open_store(store_cfg, cfg.gallery, model=engine.embedder.name, dim=engine.embedder.dim),
                          registry, cfg.worker.store_buffer)
    try:
        processor = build_processor(engine, store, cfg, worker=worker_id, live_ttl_s=cfg.retention.live_ttl_s)
        service = WorkerService(worker_id, processor, cfg.worker, broker, cfg.protocol, registry,
                                security=cfg.security)
        retention = RetentionJob(store, cfg.retention, cfg.visitors, registry)
        try:
            port = serve(registry, metrics_port, cfg.worker.metrics_host)
        except OSError as exc:
            raise ArgusError(f"worker: cannot serve metrics on port {metrics_port}: {exc}") from exc
        print(f"worker {worker_id}: brokers {','.join(service.backends)}, events to {','.join(service.events_in)}, "
              f"store "
              f"{store.describe()} ({store.persons.face_count} faces), detector on {engine.detector.provider} "
              f"({cfg.worker.detect_threads} detection thread(s), {runtime.threads or 'all'} intra-op each, OpenCV "
              f"{cv2.getNumThreads()} thread(s)), "
              f"embedder {engine.embedder.name} on {engine.embedder.provider}, metrics "
              f"http://{cfg.worker.metrics_host}:{port}/metrics", file=sys.stderr, flush=True)
        stop = threading.Event()
        stop_on_signals(stop)
        job = retention.start(stop)
        service.run(stop)
        job.join(timeout=RETENTION_JOIN_S)
    finally:
        store.close()
    return 0
