"""How events and live tracks are written as JSON by every backend (one format, so a migration is a copy)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from shared.protocol import TrackEvent
from store.types import CameraStatus, LiveTrack


def event_json(event: TrackEvent) -> str:
    return json.dumps(event.to_json_dict(), separators=(",", ":"))


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
