"""The local live tracks: one row per (camera, track) in ``store.sqlite`` with the time it expires; beside them one
row per camera (status and latest preview JPEG, sealed with the store's key when it has one)."""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

from store.codec import camera_from_json, camera_json, live_from_json, live_json
from store.crypto import Cipher, seal, unseal
from store.local.sqlite import RecordsDb
from store.types import CameraStatus, LiveTrack, TrackRef


def preview_aad(camera: str) -> bytes:
    return f"preview/{camera}".encode()


class LocalLiveTracks:
    def __init__(self, records: RecordsDb, cipher: Cipher | None = None) -> None:
        self._records = records
        self._cipher = cipher

    def put(self, track: LiveTrack, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: expected > 0, got {ttl_s}")
        with self._records.transaction() as db:
            db.execute("INSERT OR REPLACE INTO live_tracks VALUES (?, ?, ?, ?, ?)",
                       (track.camera, track.track, track.name, live_json(track), time.time() + ttl_s))

    def remove(self, camera: str, track: int) -> None:
        with self._records.transaction() as db:
            db.execute("DELETE FROM live_tracks WHERE camera = ? AND track = ?", (camera, track))

    def alive(self, camera: str | None = None, now: float | None = None) -> list[LiveTrack]:
        now = time.time() if now is None else now
        sql, args = "SELECT body FROM live_tracks WHERE expires > ?", [now]
        if camera is not None:
            sql += " AND camera = ?"
            args.append(camera)
        rows = self._records.read(sql + " ORDER BY camera, track", tuple(args))
        return [live_from_json(body) for (body,) in rows]

    def rename_identity(self, old: str, new: str) -> int:
        return len(self.rename_tracks(old, new))

    def rename_tracks(self, old: str, new: str) -> list[TrackRef]:
        with self._records.transaction() as db:
            rows = db.execute("SELECT camera, track, body FROM live_tracks WHERE name = ?", (old,)).fetchall()
            for camera, track, body in rows:
                renamed = dataclasses.replace(live_from_json(body), name=new, visitor=False)
                db.execute("UPDATE live_tracks SET name = ?, body = ? WHERE camera = ? AND track = ?",
                           (new, live_json(renamed), camera, track))
        return [TrackRef(camera, int(track)) for camera, track, _ in rows]

    def restore_tracks(self, tracks: Sequence[TrackRef], old: str, new: str) -> int:
        restored = 0
        with self._records.transaction() as db:
            for ref in tracks:
                row = db.execute("SELECT body FROM live_tracks WHERE camera = ? AND track = ? AND name = ? AND "
                                 "expires > ?", (ref.camera, ref.track, new, time.time())).fetchone()
                if row is None:
                    continue
                track = dataclasses.replace(live_from_json(row[0]), name=old, visitor=True)
                db.execute("UPDATE live_tracks SET name = ?, body = ? WHERE camera = ? AND track = ?",
                           (old, live_json(track), ref.camera, ref.track))
                restored += 1
        return restored

    def remove_identity(self, name: str) -> tuple[int, list[str]]:
        with self._records.transaction() as db:
            rows = db.execute("SELECT body FROM live_tracks WHERE name = ?", (name,)).fetchall()
            db.execute("DELETE FROM live_tracks WHERE name = ?", (name,))
        crops = {live_from_json(body).crop for (body,) in rows}
        return len(rows), sorted(c for c in crops if c)

    def expire(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._records.transaction() as db:
            return db.execute("DELETE FROM live_tracks WHERE expires <= ?", (now,)).rowcount

    def put_camera(self, status: CameraStatus, preview: bytes | None, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ValueError(f"ttl_s: expected > 0, got {ttl_s}")
        blob = None if preview is None else seal(self._cipher, preview, preview_aad(status.camera))
        with self._records.transaction() as db:
            db.execute("INSERT OR REPLACE INTO cameras VALUES (?, ?, ?, ?)",
                       (status.camera, camera_json(status), blob, time.time() + ttl_s))

    def cameras(self, now: float | None = None) -> list[CameraStatus]:
        now = time.time() if now is None else now
        rows = self._records.read("SELECT body FROM cameras WHERE expires > ? ORDER BY camera", (now,))
        return [camera_from_json(body) for (body,) in rows]

    def preview(self, camera: str) -> bytes:
        rows = self._records.read("SELECT preview FROM cameras WHERE camera = ? AND expires > ?",
                                  (camera, time.time()))
        if not rows or rows[0][0] is None:
            raise KeyError(f"no preview of camera {camera!r}")
        return unseal(self._cipher, bytes(rows[0][0]), preview_aad(camera), f"preview of {camera}")

    def expire_cameras(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._records.transaction() as db:
            return db.execute("DELETE FROM cameras WHERE expires <= ?", (now,)).rowcount

    def clear_previews(self) -> int:
        with self._records.transaction() as db:
            return db.execute("UPDATE cameras SET preview = NULL WHERE preview IS NOT NULL").rowcount

    def close(self) -> None:
        """The record database is closed by the store that owns it."""
