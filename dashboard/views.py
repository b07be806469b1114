"""What the JSON API returns: events (the `--events-jsonl` fields plus the log's id, worker and ``crop_url``), live
tracks and cameras, as plain dicts."""

from __future__ import annotations

import time
from urllib.parse import quote

from store.types import CameraStatus, LiveTrack, LoggedEvent

OFFLINE = "offline"
ONLINE = "online"


def crop_url(key: str | None) -> str | None:
    if not key:
        return None
    camera, _, track = key.partition("/")
    return f"/api/crops/{quote(camera, safe='')}/{quote(track, safe='')}.jpg"


def event_json(logged: LoggedEvent) -> dict:
    """``latency_ms``: capture of the frame that caused the event -> the worker emitting it."""
    event = logged.event
    data = event.to_json_dict()
    data["latency_ms"] = round(max(0.0, event.ts - event.capture_ts) * 1000.0, 1)
    data["id"] = logged.id
    data["worker"] = logged.worker
    key = logged.crop or (f"{event.camera}/{event.track}" if event.name is not None else None)
    data["crop_url"] = crop_url(key)
    return data


def live_json(track: LiveTrack) -> dict:
    return {"camera": track.camera, "track": track.track, "name": track.name, "visitor": track.visitor,
            "similarity": track.similarity, "box": None if track.box is None else list(track.box),
            "started_ts": track.started_ts, "updated_ts": track.updated_ts,
            "time_to_name_ms": track.time_to_name_ms, "worker": track.worker, "crop_url": crop_url(track.crop)}


def cameras_json(configured: list[str], statuses: list[CameraStatus]) -> list[dict]:
    """Every configured camera and every camera a worker reports, online when its status is fresh."""
    by_id = {s.camera: s for s in statuses}
    out = []
    for camera in sorted(set(configured) | set(by_id)):
        s = by_id.get(camera)
        row = {"camera": camera, "status": ONLINE if s is not None else OFFLINE,
               "preview_url": f"/api/cameras/{quote(camera, safe='')}/preview.jpg" if s is not None else None}
        if s is not None:
            row.update(worker=s.worker, fps=s.fps, frames=s.frames, dropped=s.dropped, tracks=s.tracks,
                       width=s.width, height=s.height, age_s=round(max(0.0, time.time() - s.updated_ts), 2))
        out.append(row)
    return out
