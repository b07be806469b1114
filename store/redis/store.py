"""The Redis backend (``store: {type: redis, url: redis://HOST:PORT/DB, prefix: P}``): one Redis database shared
by every worker, CLI and dashboard on any host.

Key layout (all under ``P:``, see `store.redis.keys`)::

    P:meta                         hash: kind (argusnet-store), schema_version, created
    P:persons:..., P:visitors:...  the two galleries (store.redis.gallery): meta, faces, change stream, lock
    P:events, P:events:...         the event log (store.redis.events)
    P:crop:<camera>/<track>, P:crops   track crops and their time index (store.redis.media)
    P:live:...                     live tracks with TTLs and a per-camera index (store.redis.live)

Opening refuses a prefix that holds keys but no ArgusNet meta (another application's keys) and a schema version
this code does not know, with `GalleryError`; a dead server is `StoreError` after ``socket_timeout_s``.
"""

from __future__ import annotations

import logging
import time

import redis

from shared.errors import GalleryError, GalleryMissingError
from store.config import GalleryConfig, RedisStoreConfig
from store.redis.client import connect, guard
from store.redis.events import RedisEventLog
from store.redis.gallery import CREATE_META_SCRIPT, RedisGallery
from store.redis.keys import SCHEMA_VERSION, STORE_KIND, StoreKeys
from store.redis.live import RedisLiveTracks
from store.redis.media import RedisMediaStore
from store.visitors import GalleryVisitorStore

log = logging.getLogger(__name__)


def _foreign(where: str, prefix: str, detail: str) -> GalleryError:
    return GalleryError(f"redis store {where}: the keys under prefix {prefix!r} are not an ArgusNet store ({detail}); "
                        "choose another store.prefix or database")


def _validate_meta(client: redis.Redis, keys: StoreKeys, where: str) -> None:
    meta = client.hgetall(keys.meta)
    if meta.get(b"kind") != STORE_KIND.encode():
        raise _foreign(where, keys.prefix, f"{keys.meta} has kind {meta.get(b'kind')!r}")
    version = meta.get(b"schema_version", b"").decode("utf-8", "replace")
    if version != str(SCHEMA_VERSION):
        raise GalleryError(f"redis store {where}: store schema version {version or '(none)'} is not supported "
                           f"(this ArgusNet reads version {SCHEMA_VERSION})")


def _check_store(client: redis.Redis, keys: StoreKeys, where: str, create: bool) -> None:
    """The store's meta is there and ours (created when ``create`` and the prefix is empty)."""
    client.ping()
    kind = client.type(keys.meta)
    if kind == b"none":
        other = next(iter(client.scan_iter(match=keys.pattern, count=1000)), None)
        kind = client.type(keys.meta)  # another process may have created the store meanwhile
        if other is not None and kind == b"none":
            raise _foreign(where, keys.prefix, f"no {keys.meta}, but {other.decode('utf-8', 'replace')!r}")
    if kind == b"none":
        if not create:
            raise GalleryMissingError(f"no gallery at {where} (enrol someone first: `argusnet enroll NAME PHOTO...` "
                                      "with this store configured)")
        client.eval(CREATE_META_SCRIPT, 1, keys.meta, "kind", STORE_KIND, "schema_version", str(SCHEMA_VERSION),
                    "created", repr(time.time()))
    elif kind != b"hash":
        raise _foreign(where, keys.prefix, f"{keys.meta} is a {kind.decode()}")
    _validate_meta(client, keys, where)


def _gallery(client: redis.Redis, keys: StoreKeys, name: str, cfg: GalleryConfig, where: str, model: str | None,
             dim: int | None, create: bool) -> RedisGallery:
    gkeys = keys.gallery(name)
    label = f"{where} ({name})"
    if not RedisGallery.exists(client, gkeys, label):
        if not create or model is None or dim is None:
            raise GalleryMissingError(f"no gallery at {where} (enrol someone first: `argusnet enroll NAME PHOTO...` "
                                      "with this store configured)")
        RedisGallery.create_meta(client, gkeys, model, dim, label)
    gallery = RedisGallery(client, gkeys, cfg, label)
    if model is not None and gallery.model != model:
        raise GalleryError(f"{label} holds {gallery.model} embeddings but the configured embedder is {model}; run "
                           "`argusnet gallery reembed` or use another store")
    return gallery


class RedisStore:
    """Persons, visitors, crops, events and live tracks in one Redis database. Use as a context manager."""

    def __init__(self, where: str, client: redis.Redis, persons: RedisGallery, visitors: RedisGallery,
                 keys: StoreKeys) -> None:
        self.where = where
        self._client = client
        self._keys = keys
        self.persons = persons
        self.visitors = GalleryVisitorStore(visitors)
        self.media = RedisMediaStore(client, keys, where)
        self.events = RedisEventLog(client, keys, where)
        self.live = RedisLiveTracks(client, keys, where)

    @classmethod
    def open(cls, cfg: RedisStoreConfig, gallery: GalleryConfig, model: str | None = None, dim: int | None = None,
             create: bool = False) -> "RedisStore":
        """Open the store; ``model``: refuse a gallery of another embedder; ``create``: make it when missing
        (needs ``model`` and ``dim``)."""
        where = f"{cfg.describe()} prefix {cfg.prefix}"
        if cfg.encryption_key_file is not None:
            raise GalleryError(f"redis store {where}: store.encryption_key_file is not supported by the Redis "
                               "backend yet (only type: local encrypts at rest); unset it")
        keys = StoreKeys(cfg.prefix)
        client = connect(cfg)
        try:
            with guard(where, "opening the store"):
                _check_store(client, keys, where, create and model is not None and dim is not None)
            persons = _gallery(client, keys, "persons", gallery, where, model, dim, create)
            # visitors follow the persons' model (a reembed that stopped half-way leaves them on another one)
            visitors = _gallery(client, keys, "visitors", gallery, where, persons.model, persons.dim, True)
        except BaseException:
            client.close()
            raise
        log.debug("store: redis %s", where)
        return cls(where, client, persons, visitors, keys)

    def describe(self) -> str:
        return self.where

    def finish_erasure(self, name: str) -> tuple[str, ...]:
        """Deleted keys, hash fields and set members leave no bytes in Redis, and the event stream was rewritten;
        here both galleries' change streams are rewritten without ``name`` (`RedisGallery.scrub_changes`). A
        gallery that holds ``name`` again (a worker wrote it meanwhile) is left as it is, and said. (The server's
        AOF and RDB files are its operator's: rewrite them with BGREWRITEAOF / BGSAVE.)"""
        left = []
        for label, gallery in (("persons", self.persons), ("visitors", self.visitors.gallery)):
            if gallery.scrub_changes(name) is None:
                left.append(f"{self._keys.gallery(label).changes}: not rewritten, the {label} gallery holds "
                            f"{name!r} again (a worker wrote it meanwhile): run the forget again")
        return tuple(left)

    def close(self) -> None:
        self.visitors.close()
        self.persons.close()
        self._client.close()

    def __enter__(self) -> "RedisStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
