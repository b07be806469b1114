"""How events, live tracks and what a merge keeps for an unmerge are written as JSON by every backend (one format,
so a migration is a copy)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any, Iterable, Sequence

from shared.logs import RateLimitedLog
from shared.protocol import TrackEvent
from store.types import CameraStatus, EventRecord, LiveTrack, MergeUndo, TrackRef

log = logging.getLogger(__name__)
_rate_log = RateLimitedLog(log)
# Events expire by their capture time: one dated in the future would never expire. An event dated further ahead of
# the store's clock than this (a camera clock far off, a forged time) is logged dated that far ahead at most.
MAX_FUTURE_S = 300.0


def event_json(event: TrackEvent) -> str:
    return json.dumps(event.to_json_dict(), separators=(",", ":"))


def not_ahead(records: Sequence[EventRecord], now: float | None = None) -> list[EventRecord]:
    """The records with ``capture_ts`` and ``ts`` clamped to at most ``MAX_FUTURE_S`` after ``now`` (the store's
    clock); every backend's event log appends what this returns."""
    limit = (time.time() if now is None else now) + MAX_FUTURE_S
    out = [r if max(r.event.capture_ts, r.event.ts) <= limit else
           dataclasses.replace(r, event=dataclasses.replace(r.event, capture_ts=min(r.event.capture_ts, limit),
                                                            ts=min(r.event.ts, limit))) for r in records]
    clamped = sum(a is not b for a, b in zip(records, out))
    if clamped:
        _rate_log.warning("future_events", "%d event(s) dated more than %.0f s ahead of this host's clock: logged "
                          "dated %.0f s ahead (events expire by their capture time)", clamped, MAX_FUTURE_S,
                          MAX_FUTURE_S)
    return out


def event_from_json(text: str) -> TrackEvent:
    """The event a backend stored (validated again by TrackEvent itself)."""
    data: dict[str, Any] = json.loads(text)
    if data.get("box") is not None:
        data["box"] = tuple(data["box"])
    return TrackEvent(**data)


def renamed_event(event: TrackEvent, old: str, new: str) -> TrackEvent:
    """The event naming ``new`` (an enrolled person) where it named the visitor ``old``."""
    if event.name != old or new == old:  # not this identity, or no rename at all: the event as it was
        return event
    return dataclasses.replace(event, name=new, visitor=False)


def restored_event(event: TrackEvent, old: str, new: str, visitor: bool) -> TrackEvent:
    """Undo ``renamed_event``: the event naming the visitor ``old`` (with its ``visitor`` flag as it was) where it
    names ``new``."""
    if event.name != new or new == old:
        return event
    return dataclasses.replace(event, name=old, visitor=visitor)


def unnamed_event(event: TrackEvent) -> TrackEvent | None:
    """The event as if its track had never been named (an operator said "not this person"): None for the
    ``track_identified`` event (withdrawn), the others without a name."""
    if event.type == "track_identified":
        return None
    return dataclasses.replace(event, name=None, similarity=None, margin=None, visitor=False, merged_visitor=None)


def live_json(track: LiveTrack) -> str:
    data = dataclasses.asdict(track)
    data["box"] = None if track.box is None else list(track.box)
    return json.dumps(data, separators=(",", ":"))


def live_from_json(text: str) -> LiveTrack:
    data: dict[str, Any] = json.loads(text)
    if data.get("box") is not None:
        data["box"] = tuple(float(v) for v in data["box"])
    return LiveTrack(**data)


def camera_json(status: CameraStatus) -> str:
    return json.dumps(dataclasses.asdict(status), separators=(",", ":"))


def camera_from_json(text: str) -> CameraStatus:
    return CameraStatus(**json.loads(text))


def merge_undo_json(person_faces: Sequence[int], live_tracks: Sequence[TrackRef]) -> str:
    """What a merge keeps besides the faces (`store.types.MergeUndo`), as every backend stores it."""
    return json.dumps({"person_faces": [int(i) for i in person_faces],
                       "live_tracks": [[t.camera, int(t.track)] for t in live_tracks]}, separators=(",", ":"))


def merge_undo_from_json(text: str, visitor: str, person: str, merged_at: float, faces: int,
                         blocked: str | None) -> MergeUndo:
    data: dict[str, Any] = json.loads(text)
    return MergeUndo(visitor, person, merged_at, faces, tuple(int(i) for i in data["person_faces"]),
                     tuple(TrackRef(str(c), int(t)) for c, t in data["live_tracks"]), blocked)


def undo_blocked(visitor: str, expired_at: float | None, kept_models: Iterable[str], model: str,
                 exists: bool) -> str | None:
    """Why a merge of ``visitor`` can no longer be undone (`MergeUndo.blocked`), the same words on every backend."""
    if expired_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expired_at))
        return (f"the faces {visitor} had when it was merged were deleted at {when} (visitors.retention_h after "
                "the merge, or a store migration)")
    other = sorted(set(kept_models) - {model})
    if other:
        return (f"the gallery was re-embedded with {model} since the merge; the faces kept of {visitor} hold "
                f"{', '.join(other)} embeddings")
    if exists:
        return f"a visitor named {visitor} exists again"
    return None
