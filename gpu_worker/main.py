"""``argusnet worker``: one worker process (engine + gallery + frame processor + service) until SIGINT / SIGTERM."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

from prometheus_client import CollectorRegistry

from gpu_worker.engine import Engine
from gpu_worker.gallery import Gallery
from gpu_worker.identity_store import LocalIdentityStore, open_visitors
from gpu_worker.processing import FrameProcessor, PerFrameProcessor
from gpu_worker.service import WorkerService
from gpu_worker.tracked import TrackedProcessor
from shared.config import ArgusConfig, BrokerConfig
from shared.errors import ArgusError, GalleryError
from shared.metrics import serve
from shared.signals import stop_on_signals

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:40]
    return f"worker-{host}-{os.getpid()}"


def open_gallery(directory: Path, engine: Engine) -> Gallery:
    """The gallery the worker searches; it must exist and hold the configured embedder's embeddings."""
    gallery = Gallery.open(directory, engine.cfg.gallery)
    if gallery.model != engine.embedder.name:
        gallery.close()
        raise GalleryError(f"gallery {directory} holds {gallery.model} embeddings but the configured embedder is "
                           f"{engine.embedder.name}; run `argusnet gallery reembed --gallery {directory}` or use "
                           "another gallery")
    return gallery


def build_processor(engine: Engine, gallery: Gallery, visitors: Gallery | None) -> FrameProcessor:
    """The configured frame processor: tracked (default) or per-frame recognition."""
    if engine.cfg.tracking.processor == "per_frame" or visitors is None:
        return PerFrameProcessor(engine, gallery)
    return TrackedProcessor(engine, LocalIdentityStore(gallery, visitors, engine.cfg.visitors), engine.cfg)


@contextlib.contextmanager
def open_stores(directory: Path, engine: Engine) -> Iterator[tuple[Gallery, Gallery | None]]:
    """The person gallery and, for the tracked processor, the visitor gallery beside it."""
    with open_gallery(directory, engine) as gallery:
        if engine.cfg.tracking.processor != "tracked":
            yield gallery, None
            return
        with open_visitors(directory, gallery.model, gallery.dim, engine.cfg.gallery) as visitors:
            yield gallery, visitors


def run_worker(cfg: ArgusConfig, broker: BrokerConfig, gallery_dir: Path, worker_id: str,
               metrics_port: int) -> int:
    """Load the models, serve metrics, run the service until a signal; returns the exit code."""
    engine = Engine(cfg)
    engine.warm_up()
    registry = CollectorRegistry()
    with open_stores(gallery_dir, engine) as (gallery, visitors):
        service = WorkerService(worker_id, build_processor(engine, gallery, visitors), cfg.worker, broker,
                                cfg.protocol, registry)
        try:
            port = serve(registry, metrics_port)
        except OSError as exc:
            raise ArgusError(f"worker: cannot serve metrics on port {metrics_port}: {exc}") from exc
        print(f"worker {worker_id}: broker {broker.backend}, events to {broker.events_in}, gallery {gallery_dir} "
              f"({gallery.face_count} faces), detector on {engine.detector.provider}, embedder "
              f"{engine.embedder.name} on {engine.embedder.provider}, metrics http://127.0.0.1:{port}/metrics",
              file=sys.stderr, flush=True)
        stop = threading.Event()
        stop_on_signals(stop)
        service.run(stop)
    return 0
