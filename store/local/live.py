"""The local live tracks: one row per (camera, track) in ``store.sqlite`` with the time it expires."""

from __future__ import annotations

import dataclasses
import time

from store.codec import live_from_json, live_json
from store.local.sqlite import RecordsDb
from store.types import LiveTrack


class LocalLiveTracks:
    def __init__(self, records: RecordsDb) -> None:
        self._records = records

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
        with self._records.transaction() as db:
            rows = db.execute("SELECT camera, track, body FROM live_tracks WHERE name = ?", (old,)).fetchall()
            for camera, track, body in rows:
                renamed = dataclasses.replace(live_from_json(body), name=new, visitor=False)
                db.execute("UPDATE live_tracks SET name = ?, body = ? WHERE camera = ? AND track = ?",
                           (new, live_json(renamed), camera, track))
        return len(rows)

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

    def close(self) -> None:
        """The record database is closed by the store that owns it."""
