"""`argusnet store rekey` on the Redis backend: every sealed blob re-encrypted from the old key (None: a plain
store, which this encrypts) to the new one, in place.

Stop every worker and dashboard of the site first: a rekey is refused while a worker publishes camera statuses
(they expire ``tracking.preview.ttl_s`` after the worker stops). Order: the store's meta records ``rekey_to`` (the
new key's check value), which makes every other process refuse the store; then each face of every gallery
(persons, visitors, negatives), the faces merges kept aside included (embedding and crop; one HSET each, only where
the face still exists), each track crop (SET XX), and the previews are deleted (workers refresh them every second);
last, the new key check value replaces the old and ``rekey_to`` goes, in one transaction. A blob that already opens
with the new key is skipped, so a rekey that stopped part-way (the store refuses both keys meanwhile, naming the
rekey) is finished by running the same command again.
"""

from __future__ import annotations

import logging

import redis

from shared.errors import GalleryError, GalleryMissingError
from store.config import RedisStoreConfig
from store.crypto import META_KEY, Cipher, check_key, unseal
from store.local.media import crop_aad
from store.redis.client import connect, guard
from store.redis.gallery import face_aad
from store.redis.keys import GALLERIES, REKEY_FIELD, GalleryKeys, StoreKeys
from store.redis.live import RedisLiveTracks
from store.redis.store import validate_meta

log = logging.getLogger(__name__)

PAGE = 500
HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def _resealed(old: Cipher | None, new: Cipher, blob: bytes, aad: bytes, where: str) -> bytes | None:
    """``blob`` sealed with ``new`` (None when it already is)."""
    if new.opens(blob, aad):
        return None
    return new.encrypt(unseal(old, blob, aad, where), aad)


def _reseal_faces(client: redis.Redis, keys: GalleryKeys, gallery: str, salt: str, old: Cipher | None,
                  new: Cipher) -> int:
    """Every face of one gallery; how many were rewritten."""
    hset = client.register_script(HSET_IF_EXISTS)
    done = 0
    for pattern in (keys.face_pattern, keys.merged_face_pattern):  # and the faces merges kept aside
        for key in client.scan_iter(match=pattern, count=PAGE):
            suffix = key.rsplit(b":", 1)[-1]
            if not suffix.isdigit():
                continue
            face_id = int(suffix)
            embedding, crop = client.hmget(key, "embedding", "crop")
            fields: list[bytes | str] = []
            for name, blob in (("embedding", embedding), ("crop", crop)):
                if blob is not None:
                    sealed = _resealed(old, new, blob, face_aad(salt, gallery, face_id, name),
                                       f"{keys.base}: face {face_id} {name}")
                    fields += [] if sealed is None else [name, sealed]
            if fields:
                done += int(hset(keys=[key], args=fields))
    return done


def _reseal_crops(client: redis.Redis, keys: StoreKeys, old: Cipher | None, new: Cipher) -> int:
    done, start = 0, 0
    while True:
        names = [k.decode("utf-8") for k in client.zrange(keys.crops, start, start + PAGE - 1)]
        for name in names:
            blob = client.get(keys.crop(name))
            sealed = None if blob is None else _resealed(old, new, blob, crop_aad(name), f"crop {name}")
            if sealed is not None and client.set(keys.crop(name), sealed, xx=True):
                done += 1
        if len(names) < PAGE:
            return done
        start += PAGE


def _begin(client: redis.Redis, keys: StoreKeys, where: str, old: Cipher | None, new: Cipher) -> str:
    """Check that the rekey may start (or resume) and mark it running; the store's salt."""
    meta = client.hgetall(keys.meta)
    if not meta:
        raise GalleryMissingError(f"no store at {where}: nothing to rekey")
    validate_meta(client, keys, where)
    pending = meta.get(REKEY_FIELD.encode())
    if pending is not None and pending.decode("ascii") != new.check_value:
        raise GalleryError(f"redis store {where}: a rekey to another key stopped part-way; finish it with that key "
                           "file first")
    recorded = meta.get(META_KEY.encode())
    check_key(None if recorded is None else recorded.decode("ascii"), old, f"redis store {where}")
    busy = RedisLiveTracks(client, keys, where).cameras()
    if busy:
        cameras = ", ".join(sorted({s.camera for s in busy}))
        raise GalleryError(f"redis store {where}: workers are serving cameras ({cameras}) from this store; stop every "
                           "worker and dashboard first")
    client.hset(keys.meta, REKEY_FIELD, new.check_value)
    return meta.get(b"created", b"").decode("ascii")


def rekey_redis(cfg: RedisStoreConfig, old: Cipher | None, new: Cipher) -> dict[str, int]:
    """Re-encrypt the Redis store ``cfg`` names from ``old`` to ``new`` (module docstring); what was rewritten."""
    where = f"{cfg.describe()} prefix {cfg.prefix}"
    keys = StoreKeys(cfg.prefix)
    client = connect(cfg)
    try:
        with guard(where, "rekeying the store"):
            salt = _begin(client, keys, where, old, new)
            done = {name: _reseal_faces(client, keys.gallery(name), name, salt, old, new) for name in GALLERIES}
            done["crops"] = _reseal_crops(client, keys, old, new)
            done["previews"] = RedisLiveTracks(client, keys, where).clear_previews()
            pipe = client.pipeline(transaction=True)
            pipe.hset(keys.meta, META_KEY, new.check_value)
            pipe.hdel(keys.meta, REKEY_FIELD)
            pipe.execute()
    finally:
        client.close()
    log.info("rekeyed redis store %s: %s", where, done)
    return done
