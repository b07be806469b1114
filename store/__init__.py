"""The storage layer: gallery, visitors, negative evidence, crops, event log and live tracks behind one interface
(`store.base`), with one backend per ``store.type`` (`store.local`, `store.redis`). Nothing outside this package opens
SQLite, reads an index file or walks crop folders."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from store.audit import AuditTrail
from store.base import (
    EventLog,
    LiveTracks,
    MediaStore,
    NegativeStore,
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


@contextmanager
def opened_audit(cfg: StoreConfig) -> Iterator[AuditTrail | None]:
    """The audit log of the configured store without opening its galleries (for commands that only record a
    change), or None when there is no store yet (the first enrolment creates it, and nothing before it is an
    identity change)."""
    if cfg.type == "local":
        from store.audit import AuditKey
        from store.local.audit import FileAuditLog

        key = AuditKey.from_file(cfg.audit_key_file, cfg.directory())
        yield FileAuditLog(cfg.directory(), key) if cfg.directory().is_dir() else None
    elif cfg.type == "redis":
        from store.redis.store import redis_audit

        with redis_audit(cfg) as trail:
            yield trail
    else:
        raise ValueError(f"unknown store type {cfg.type!r}")


__all__ = ["AuditTrail", "EventLog", "GalleryConfig", "LiveTracks", "LocalStoreConfig", "MediaStore", "NegativeStore",
           "PersonGallery", "RedisStoreConfig", "Store", "StoreConfig", "VisitorStore", "opened_audit", "open_store"]
