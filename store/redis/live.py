"""The Redis live tracks: each track is a key ``PREFIX:live:track:<camera>/<track>`` holding the track as JSON
with a TTL (SET PX), so a dead worker's tracks vanish by themselves; ``PREFIX:live:camera:<camera>`` (track id by
expiry time) and ``PREFIX:live:cameras`` index them, and ``alive`` reads only index entries whose time has not run
out and whose key still exists."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import redis

from store.codec import camera_from_json, camera_json, live_from_json, live_json
from store.crypto import Cipher, seal, unseal
from store.local.live import preview_aad
from store.redis.client import redis_op
from store.redis.keys import StoreKeys
from store.types import CameraStatus, LiveTrack, TrackRef

# One camera's expired tracks out of its index (their keys too), and the camera out of the camera set once its
# index is empty; atomic, so a track a worker refreshes at the same moment is never deleted.
EXPIRE_SCRIPT = """
local tracks = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, track in ipairs(tracks) do
  redis.call('ZREM', KEYS[1], track)
  redis.call('DEL', ARGV[2] .. track)
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[3]) end
return #tracks
"""


class RedisLiveTracks:
    def __init__(self, client: redis.Redis, keys: StoreKeys, where: str, cipher: Cipher | None = None) -> None:
        self._cipher = cipher  # previews are sealed with the store's key when it has one
        self._r = client
        self._k = keys
        self.where = where
        self._expire = client.register_script(EXPIRE_SCRIPT)

    @redis_op("storing a live track")
    def put(self, track: LiveTrack, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: expected > 0, got {ttl_s}")
        pipe = self._r.pipeline(transaction=True)
        pipe.set(self._k.live(track.camera, track.track), live_json(track), px=max(1, round(ttl_s * 1000)))
        pipe.zadd(self._k.live_camera(track.camera), {str(track.track): time.time() + ttl_s})
        pipe.sadd(self._k.live_cameras, track.camera)
        pipe.execute()

    @redis_op("removing a live track")
    def remove(self, camera: str, track: int) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._k.live(camera, track))
        pipe.zrem(self._k.live_camera(camera), str(track))
        pipe.execute()

    def _cameras(self, camera: str | None) -> list[str]:
        if camera is not None:
            return [camera]
        return sorted(c.decode("utf-8") for c in self._r.smembers(self._k.live_cameras))

    def _tracks(self, camera: str, low: float | str) -> list[tuple[int, bytes | None]]:
        """(track id, its JSON or None when its key is gone) of one camera's index entries above ``low``."""
        tracks = sorted(int(t) for t in self._r.zrangebyscore(self._k.live_camera(camera), low, "+inf"))
        if not tracks:
            return []
        return list(zip(tracks, self._r.mget([self._k.live(camera, t) for t in tracks])))

    @redis_op("reading live tracks")
    def alive(self, camera: str | None = None, now: float | None = None) -> list[LiveTrack]:
        now = time.time() if now is None else now
        return [live_from_json(body.decode("utf-8")) for cam in self._cameras(camera)
                for _, body in self._tracks(cam, f"({now!r}") if body is not None]

    def rename_identity(self, old: str, new: str) -> int:
        return len(self.rename_tracks(old, new))

    @redis_op("renaming live tracks")
    def rename_tracks(self, old: str, new: str) -> list[TrackRef]:
        renamed = []
        for camera in self._cameras(None):
            for track_id, body in self._tracks(camera, "-inf"):
                if body is None:
                    continue
                track = live_from_json(body.decode("utf-8"))
                if track.name != old:
                    continue
                # KEEPTTL XX: the worker's TTL stands, and a track that expired meanwhile is not brought back
                if self._r.set(self._k.live(camera, track_id), live_json(dataclasses.replace(track, name=new,
                               visitor=False)), keepttl=True, xx=True):
                    renamed.append(TrackRef(camera, track_id))
        return renamed

    @redis_op("restoring live tracks")
    def restore_tracks(self, tracks: Sequence[TrackRef], old: str, new: str) -> int:
        restored = 0
        for ref in tracks:
            body = self._r.get(self._k.live(ref.camera, ref.track))
            track = None if body is None else live_from_json(body.decode("utf-8"))
            if track is None or track.name != new:
                continue
            # KEEPTTL XX, as in a rename: the worker's TTL stands, an expired track is not brought back
            if self._r.set(self._k.live(ref.camera, ref.track), live_json(dataclasses.replace(track, name=old,
                           visitor=True)), keepttl=True, xx=True):
                restored += 1
        return restored

    @redis_op("removing an identity's live tracks")
    def remove_identity(self, name: str) -> tuple[int, list[str]]:
        removed, crops = 0, set()
        for camera in self._cameras(None):
            for track_id, body in self._tracks(camera, "-inf"):
                track = None if body is None else live_from_json(body.decode("utf-8"))
                if track is None or track.name != name:
                    continue
                pipe = self._r.pipeline(transaction=True)
                pipe.delete(self._k.live(camera, track_id))
                pipe.zrem(self._k.live_camera(camera), str(track_id))
                removed += int(pipe.execute()[0])
                if track.crop:
                    crops.add(track.crop)
        return removed, sorted(crops)

    @redis_op("expiring live tracks")
    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return sum(int(self._expire(keys=[self._k.live_camera(camera), self._k.live_cameras],
                                    args=[repr(now), self._k.live_base(camera), camera]))
                   for camera in self._cameras(None))

    # Camera statuses: one hash per camera with a TTL (PEXPIRE), indexed by expiry in a sorted set.
    @redis_op("storing a camera status")
    def put_camera(self, status: CameraStatus, preview: bytes | None, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: expected > 0, got {ttl_s}")
        key = self._k.camera_status(status.camera)
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(key)
        sealed = {} if preview is None else {"preview": seal(self._cipher, preview, preview_aad(status.camera))}
        pipe.hset(key, mapping={"body": camera_json(status), **sealed})
        pipe.pexpire(key, max(1, round(ttl_s * 1000)))
        pipe.zadd(self._k.camera_index, {status.camera: time.time() + ttl_s})
        pipe.execute()

    @redis_op("reading camera statuses")
    def cameras(self, now: float | None = None) -> list[CameraStatus]:
        now = time.time() if now is None else now
        ids = sorted(c.decode("utf-8") for c in self._r.zrangebyscore(self._k.camera_index, f"({now!r}", "+inf"))
        pipe = self._r.pipeline(transaction=False)
        for camera in ids:
            pipe.hget(self._k.camera_status(camera), "body")
        return [camera_from_json(body.decode("utf-8")) for body in pipe.execute() if body is not None]

    @redis_op("reading a preview")
    def preview(self, camera: str) -> bytes:
        data = self._r.hget(self._k.camera_status(camera), "preview")
        if data is None:
            raise KeyError(f"no preview of camera {camera!r}")
        return unseal(self._cipher, data, preview_aad(camera), f"{self.where}: preview of {camera}")

    @redis_op("expiring camera statuses")
    def expire_cameras(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        gone = self._r.zrangebyscore(self._k.camera_index, "-inf", now)
        if not gone:
            return 0
        pipe = self._r.pipeline(transaction=True)
        for camera in gone:  # the hash expired by itself unless a worker refreshed it meanwhile: keep that one
            pipe.zrem(self._k.camera_index, camera)
        return sum(int(n) for n in pipe.execute())

    @redis_op("removing previews")
    def clear_previews(self) -> int:
        removed = 0
        for camera in self._r.zrange(self._k.camera_index, 0, -1):
            removed += int(self._r.hdel(self._k.camera_status(camera.decode("utf-8")), "preview"))
        return removed

    def close(self) -> None:
        """The connection is closed by the store that owns it."""
