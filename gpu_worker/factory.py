"""The configured frame processor over a store: tracked (default) or per-frame recognition."""

from __future__ import annotations

from gpu_worker.config import WorkerSettings
from gpu_worker.engine import Engine
from gpu_worker.processing import FrameProcessor, PerFrameProcessor
from gpu_worker.tracked import TrackedProcessor
from store.base import Store


def build_processor(engine: Engine, store: Store, cfg: WorkerSettings, worker: str | None = None,
                    live_ttl_s: float = 5.0) -> FrameProcessor:
    if cfg.tracking.processor == "per_frame":
        return PerFrameProcessor(engine, store.persons, store.negatives)
    return TrackedProcessor(engine, store, cfg, worker=worker, live_ttl_s=live_ttl_s)
