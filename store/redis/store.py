"""The Redis backend (``store: {type: redis, url: redis://HOST:PORT/DB, prefix: P}``): one Redis database shared
by every worker, CLI and dashboard on any host.

Key layout (all under ``P:``, see `store.redis.keys`)::

    P:meta                         hash: kind (argusnet-store), schema_version, created
    P:persons:..., P:visitors:...  the galleries (store.redis.gallery): meta, faces, change stream, lock
    P:negatives:...                negative evidence (store.negatives), a gallery of the same layout; created when a
                                   store made before it is opened
    P:events, P:events:...         the event log (store.redis.events)
    P:crop:<camera>/<track>, P:crops   track crops and their time index (store.redis.media)
    P:live:...                     live tracks with TTLs and a per-camera index (store.redis.live)

Opening refuses a prefix that holds keys but no ArgusNet meta (another application's keys) and a schema version
this code does not know, with `GalleryError`; a dead server is `StoreError` after ``socket_timeout_s``.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Collection, Iterator

import redis

from shared.errors import GalleryError, GalleryMissingError
from store.audit import AuditKey
from store.config import GalleryConfig, RedisStoreConfig
from store.crypto import META_KEY, Cipher, check_key
from store.erasures import new_salt, tombstone
from store.negatives import GalleryNegativeStore
from store.redis.audit import RedisAuditLog
from store.redis.client import connect, guard
from store.redis.events import RedisEventLog
from store.redis.gallery import CREATE_META_SCRIPT, RedisGallery
from store.redis.keys import REKEY_FIELD, SCHEMA_VERSION, STORE_KIND, StoreKeys
from store.redis.live import RedisLiveTracks
from store.redis.persistence import rewrite_files
from store.redis.media import RedisMediaStore
from store.visitors import GalleryVisitorStore

log = logging.getLogger(__name__)


def _foreign(where: str, prefix: str, detail: str) -> GalleryError:
    return GalleryError(f"redis store {where}: the keys under prefix {prefix!r} are not an ArgusNet store ({detail}); "
                        "choose another store.prefix or database")


def validate_meta(client: redis.Redis, keys: StoreKeys, where: str) -> None:
    meta = client.hgetall(keys.meta)
    if meta.get(b"kind") != STORE_KIND.encode():
        raise _foreign(where, keys.prefix, f"{keys.meta} has kind {meta.get(b'kind')!r}")
    version = meta.get(b"schema_version", b"").decode("utf-8", "replace")
    if version != str(SCHEMA_VERSION):
        raise GalleryError(f"redis store {where}: store schema version {version or '(none)'} is not supported "
                           f"(this ArgusNet reads version {SCHEMA_VERSION})")


def _check_store(client: redis.Redis, keys: StoreKeys, where: str, create: bool, cipher: Cipher | None) -> None:
    """The store's meta is there and ours (created when ``create`` and the prefix is empty, recording ``cipher``'s
    key check value when there is one)."""
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
        keyed = () if cipher is None else (META_KEY, cipher.check_value)
        client.eval(CREATE_META_SCRIPT, 1, keys.meta, "kind", STORE_KIND, "schema_version", str(SCHEMA_VERSION),
                    "created", repr(time.time()), *keyed)
    elif kind != b"hash":
        raise _foreign(where, keys.prefix, f"{keys.meta} is a {kind.decode()}")
    validate_meta(client, keys, where)


def store_salt(client: redis.Redis, keys: StoreKeys, cipher: Cipher | None, where: str) -> str:
    """Check ``cipher`` against the store's key check value (GalleryError for a wrong, missing or unwanted key, or
    a rekey that stopped part-way) and return the salt of its sealed blobs' associated data (its creation time)."""
    meta = client.hgetall(keys.meta)
    if REKEY_FIELD.encode() in meta:
        raise GalleryError(f"redis store {where}: a rekey stopped part-way; run `argusnet store rekey` again with the "
                           "same --new-key-file to finish it")
    recorded = meta.get(META_KEY.encode())
    check_key(None if recorded is None else recorded.decode("ascii"), cipher, f"redis store {where}")
    return meta.get(b"created", b"").decode("ascii")


def _gallery(client: redis.Redis, keys: StoreKeys, name: str, cfg: GalleryConfig, where: str, model: str | None,
             dim: int | None, create: bool, cipher: Cipher | None, salt: str) -> RedisGallery:
    gkeys = keys.gallery(name)
    label = f"{where} ({name})"
    if not RedisGallery.exists(client, gkeys, label):
        if not create or model is None or dim is None:
            raise GalleryMissingError(f"no gallery at {where} (enrol someone first: `argusnet enroll NAME PHOTO...` "
                                      "with this store configured)")
        RedisGallery.create_meta(client, gkeys, model, dim, label)
    gallery = RedisGallery(client, gkeys, cfg, label, cipher, salt)
    if model is not None and gallery.model != model:
        raise GalleryError(f"{label} holds {gallery.model} embeddings but the configured embedder is {model}; run "
                           "`argusnet gallery reembed` or use another store")
    return gallery


def _companion(client: redis.Redis, keys: StoreKeys, name: str, cfg: GalleryConfig, where: str,
               persons: RedisGallery, model: str | None, cipher: Cipher | None, salt: str) -> RedisGallery:
    """A gallery beside the persons' (visitors, negatives), created on their embedder on first use (also in a store
    made before it existed); another embedder's (a reembed that stopped half-way) is refused when ``model`` is
    configured, and opens for a command that embeds nothing (`argusnet gallery reembed` finishing it)."""
    if not RedisGallery.exists(client, keys.gallery(name), f"{where} ({name})"):
        RedisGallery.create_meta(client, keys.gallery(name), persons.model, persons.dim, f"{where} ({name})")
    return _gallery(client, keys, name, cfg, where, model, None, False, cipher, salt)


@contextmanager
def redis_audit(cfg: RedisStoreConfig) -> Iterator[RedisAuditLog | None]:
    """The audit log of the Redis store ``cfg`` names, on a connection of its own (closed at the end); None when
    the prefix holds no store yet. GalleryError for another application's keys."""
    where = f"{cfg.describe()} prefix {cfg.prefix}"
    keys = StoreKeys(cfg.prefix)
    audit_key = AuditKey.from_file(cfg.audit_key_file)
    client = connect(cfg)
    try:
        with guard(where, "reading the store's meta"):
            exists = bool(client.exists(keys.meta))
            if exists:
                validate_meta(client, keys, where)
        yield RedisAuditLog(client, keys, where, audit_key) if exists else None
    finally:
        client.close()


class RedisStore:
    """Persons, visitors, negative evidence, crops, events and live tracks in one Redis database. Use as a context
    manager."""

    def __init__(self, where: str, client: redis.Redis, persons: RedisGallery, visitors: RedisGallery,
                 negatives: RedisGallery, keys: StoreKeys, cipher: Cipher | None = None,
                 audit_key: AuditKey | None = None) -> None:
        self.where = where
        self._client = client
        self._keys = keys
        self.persons = persons
        self.visitors = GalleryVisitorStore(visitors)
        self.negatives = GalleryNegativeStore(negatives)
        self.media = RedisMediaStore(client, keys, where, cipher)
        self.events = RedisEventLog(client, keys, where)
        self.live = RedisLiveTracks(client, keys, where, cipher)
        self.audit = RedisAuditLog(client, keys, where, audit_key)

    @classmethod
    def open(cls, cfg: RedisStoreConfig, gallery: GalleryConfig, model: str | None = None, dim: int | None = None,
             create: bool = False) -> "RedisStore":
        """Open the store; ``model``: refuse a gallery of another embedder; ``create``: make it when missing
        (needs ``model`` and ``dim``)."""
        where = f"{cfg.describe()} prefix {cfg.prefix}"
        cipher = Cipher.from_file(cfg.encryption_key_file)
        audit_key = AuditKey.from_file(cfg.audit_key_file)
        keys = StoreKeys(cfg.prefix)
        client = connect(cfg)
        try:
            with guard(where, "opening the store"):
                _check_store(client, keys, where, create and model is not None and dim is not None, cipher)
                salt = store_salt(client, keys, cipher, where)
            persons = _gallery(client, keys, "persons", gallery, where, model, dim, create, cipher, salt)
            visitors = _companion(client, keys, "visitors", gallery, where, persons, model, cipher, salt)
            negatives = _companion(client, keys, "negatives", gallery, where, persons, model, cipher, salt)
        except BaseException:
            client.close()
            raise
        log.debug("store: redis %s%s", where, " (encrypted at rest)" if cipher else "")
        return cls(where, client, persons, visitors, negatives, keys, cipher, audit_key)

    def describe(self) -> str:
        return self.where

    def finish_erasure(self, name: str) -> tuple[str, ...]:
        """Deleted keys, hash fields and set members leave no bytes in Redis, and the event stream was rewritten;
        here every gallery's change stream is rewritten without ``name`` (`RedisGallery.scrub_changes`). A
        gallery that holds ``name`` again (a worker wrote it meanwhile) is left as it is, and said. Last, the
        server's append-only file and RDB snapshot are rewritten (`store.redis.persistence`), or said to be left."""
        left = []
        for label, gallery in (("persons", self.persons), ("visitors", self.visitors.gallery),
                               ("negatives", self.negatives.gallery)):
            if gallery.scrub_changes(name) is None:
                left.append(f"{self._keys.gallery(label).changes}: not rewritten, the {label} gallery holds "
                            f"{name!r} again (a worker wrote it meanwhile): run the forget again")
        return tuple(left) + rewrite_files(self._client, self.describe())

    def _erasure_salt(self, create: bool) -> str | None:
        if create:
            self._client.set(self._keys.erasure_salt, new_salt(), nx=True)
        salt = self._client.get(self._keys.erasure_salt)
        return None if salt is None else salt.decode("ascii")

    def record_erasure(self, name: str) -> None:
        with guard(self.where, "recording an erasure"):
            self._client.hset(self._keys.erasures, tombstone(self._erasure_salt(create=True), name),
                              repr(time.time()))

    def erased(self, names: Collection[str]) -> dict[str, float]:
        names = sorted(set(names))
        with guard(self.where, "reading the erasures"):
            salt = self._erasure_salt(create=False)
            if salt is None or not names:
                return {}
            found = self._client.hmget(self._keys.erasures, [tombstone(salt, name) for name in names])
        return {name: float(at) for name, at in zip(names, found) if at is not None}

    def close(self) -> None:
        self.negatives.close()
        self.visitors.close()
        self.persons.close()
        self._client.close()

    def __enter__(self) -> "RedisStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
