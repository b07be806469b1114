"""The storage layer: gallery, visitors, crops, event log and live tracks behind one interface (`store.base`),
with one backend per ``store.type`` (`store.local`, `store.redis`). Nothing outside this package opens SQLite, reads an index
file or walks crop folders."""

from __future__ import annotations

from store.base import (
    EventLog,
    LiveTracks,
    MediaStore,
    PersonGallery,
    Store,
    VisitorStore,
)
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig, StoreConfig


def open_store(cfg: StoreConfig, gallery: GalleryConfig, model: str | None = None, dim: int | None = None,
               create: bool = False) -> Store:
    """Open the configured backend. ``model``: refuse a gallery holding another embedder's embeddings;
    ``create``: make an empty store when there is none (needs ``model`` and ``dim``)."""
    if cfg.type == "local":
        from store.local.store import LocalStore

        return LocalStore.open(cfg, gallery, model, dim, create)
    if cfg.type == "redis":
        from store.redis.store import RedisStore

        return RedisStore.open(cfg, gallery, model, dim, create)
    raise ValueError(f"unknown store type {cfg.type!r}")


__all__ = ["EventLog", "GalleryConfig", "LiveTracks", "LocalStoreConfig", "MediaStore", "PersonGallery",
           "RedisStoreConfig", "Store", "StoreConfig", "VisitorStore", "open_store"]
