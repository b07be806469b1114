"""The Redis media store: each crop's JPEG bytes under ``PREFIX:crop:<camera>/<track>``, indexed by its time in
the sorted set ``PREFIX:crops`` (retention reads the index, never scans keys)."""

from __future__ import annotations

import time

import numpy as np
import redis
import simplejpeg

from shared.ids import is_valid_id
from store.crypto import Cipher, seal, unseal
from store.local.media import CROP_JPEG_QUALITY, crop_aad, crop_key
from store.redis.client import redis_op
from store.redis.keys import StoreKeys

PAGE = 1000


def _check_key(key: str) -> str:
    camera, sep, track = key.partition("/")
    if not sep or not track.isdigit() or not is_valid_id(camera):
        raise KeyError(f"not a crop key (camera/track): {key!r}")
    return key


class RedisMediaStore:
    def __init__(self, client: redis.Redis, keys: StoreKeys, where: str, cipher: Cipher | None = None) -> None:
        self._cipher = cipher  # crops are sealed with the store's key when it has one
        self._r = client
        self._k = keys
        self.where = where

    @redis_op("storing a crop")
    def put_crop(self, camera: str, track: int, crop: np.ndarray, when: float | None = None) -> str:
        key = crop_key(camera, track)
        data = seal(self._cipher, simplejpeg.encode_jpeg(np.ascontiguousarray(crop, dtype=np.uint8),
                                                         quality=CROP_JPEG_QUALITY, colorspace="RGB"), crop_aad(key))
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k.crop(key), data)
        pipe.zadd(self._k.crops, {key: time.time() if when is None else when})
        pipe.execute()
        return key

    @redis_op("reading a crop")
    def get_crop(self, key: str) -> bytes:
        data = self._r.get(self._k.crop(_check_key(key)))
        if data is None:
            raise KeyError(f"no crop {key!r}")
        return unseal(self._cipher, data, crop_aad(key), f"{self.where}: crop {key}")

    @redis_op("removing a crop")
    def remove(self, key: str) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._k.crop(_check_key(key)))
        pipe.zrem(self._k.crops, key)
        existed, _ = pipe.execute()
        return bool(existed)

    @redis_op("expiring crops")
    def expire(self, older_than: float) -> int:
        removed = 0
        while True:
            keys = self._r.zrangebyscore(self._k.crops, "-inf", f"({older_than!r}", start=0, num=PAGE)
            if not keys:
                return removed
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(*[self._k.crop(k.decode()) for k in keys])
            pipe.zrem(self._k.crops, *keys)
            removed += int(pipe.execute()[1])  # workers sharing the store may expire the same crops: count ours

    def _sizes(self) -> list[tuple[str, int]]:
        """(key, JPEG bytes) of every indexed crop, oldest first (a crop removed meanwhile counts 0)."""
        out: list[tuple[str, int]] = []
        start = 0
        while True:
            keys = [k.decode("utf-8") for k in self._r.zrange(self._k.crops, start, start + PAGE - 1)]
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.strlen(self._k.crop(key))
            out.extend(zip(keys, (int(n) for n in pipe.execute())))
            if len(keys) < PAGE:
                return out
            start += PAGE

    @redis_op("measuring crops")
    def total_bytes(self) -> int:
        return sum(size for _, size in self._sizes())

    @redis_op("trimming crops to the budget")
    def trim_to(self, max_bytes: int) -> int:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        sizes = self._sizes()
        excess = sum(size for _, size in sizes) - max_bytes
        doomed: list[str] = []
        for key, size in sizes:
            if excess <= 0:
                break
            doomed.append(key)
            excess -= size
        removed = 0
        for start in range(0, len(doomed), PAGE):
            chunk = doomed[start:start + PAGE]
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(*[self._k.crop(k) for k in chunk])
            pipe.zrem(self._k.crops, *chunk)
            removed += int(pipe.execute()[1])  # workers sharing the store may trim the same crops: count ours
        return removed

    def close(self) -> None:
        """The connection is closed by the store that owns it."""
