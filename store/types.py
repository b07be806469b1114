"""Value types of the store interface: frozen dataclasses, the same for every backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.protocol import TrackEvent

from shared.names import VISITOR_PREFIX as VISITOR_PREFIX  # the rule lives in shared.names; re-exported
from shared.names import is_visitor_name as is_visitor_name


@dataclass(frozen=True)
class FaceSample:
    """One face to keep for an identity: embedding (D,), aligned crop (H, W, 3) RGB uint8, its 5 landmarks in crop
    pixels (5, 2), and where it came from (a photo path, ``camera:C/track:T``)."""

    embedding: np.ndarray
    crop: np.ndarray
    landmarks: np.ndarray
    source: str


@dataclass(frozen=True)
class PersonHit:
    """A person's best face for one query."""

    name: str
    similarity: float
    face_id: int


@dataclass(frozen=True)
class PersonInfo:
    """created: when the person was added; last_seen: when their newest face was added or they were last seen
    (unix s)."""

    name: str
    faces: int
    created: float
    last_seen: float


@dataclass(frozen=True)
class StoredFace:
    """A stored face: its aligned crop with landmarks, its embedding, its source and when it was added."""

    face_id: int
    person: str
    crop: np.ndarray
    landmarks: np.ndarray
    embedding: np.ndarray
    source: str
    created: float


@dataclass(frozen=True)
class VisitorMatch:
    """The outcome of ``VisitorStore.match_or_create``: the visitor, the similarity of the match (None for a
    visitor just created) and whether it was created by this call."""

    visitor: str
    similarity: float | None
    created: bool


@dataclass(frozen=True)
class VisitorInfo:
    """A provisional identity: faces kept, first and last seen (unix s), the names an operator said it is not."""

    visitor: str
    faces: int
    first_seen: float
    last_seen: float
    rejected: tuple[str, ...]


@dataclass(frozen=True)
class EventRecord:
    """An event to append to the event log, with the media key of its track's best face (``track_ended``)."""

    event: TrackEvent
    crop: str | None = None
    worker: str | None = None


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the log keeps it: ``id`` increases with every append (a consumer's cursor)."""

    id: int
    event: TrackEvent
    crop: str | None
    worker: str | None


@dataclass(frozen=True)
class EventQuery:
    """Which events ``EventLog.query`` returns, newest first (``oldest_first``: from the lowest id up, how a consumer
    reads on from its cursor ``after_id``): in [since, until) by capture time, of one camera, of one identity
    (person or visitor name), with an id above ``after_id``; at most ``limit``."""

    since: float | None = None
    until: float | None = None
    camera: str | None = None
    identity: str | None = None
    after_id: int | None = None
    limit: int = 100
    oldest_first: bool = False


@dataclass(frozen=True)
class LiveTrack:
    """A track alive now on some worker: where, who (a person, ``visitor-N`` or None), how sure, since when."""

    camera: str
    track: int
    name: str | None
    visitor: bool
    similarity: float | None
    box: tuple[float, float, float, float] | None
    started_ts: float
    updated_ts: float
    time_to_name_ms: float | None = None
    crop: str | None = None
    worker: str | None = None


@dataclass(frozen=True)
class CameraStatus:
    """How one camera looks from the worker that serves it, refreshed about once a second with a preview frame:
    frames per second received, frames missing from its sequence (dropped on the way: camera queue, link,
    broker), live tracks, the frame size."""

    camera: str
    worker: str | None
    fps: float
    frames: int
    dropped: int
    tracks: int
    width: int
    height: int
    updated_ts: float


@dataclass(frozen=True)
class TrackRef:
    """One live track, by camera and track id."""

    camera: str
    track: int


@dataclass(frozen=True)
class MergeUndo:
    """What the merge of ``visitor`` into ``person`` kept so it can be undone (`identity.merges.unmerge_visitor`):
    when it was made (unix s), how many of the visitor's faces are kept aside (they answer no search), the face
    ids a promote added to the person, the live tracks the merge renamed, and ``blocked``: why it can no longer be
    undone, in words (None while it can)."""

    visitor: str
    person: str
    merged_at: float
    faces: int
    person_faces: tuple[int, ...] = ()
    live_tracks: tuple[TrackRef, ...] = ()
    blocked: str | None = None


@dataclass(frozen=True)
class RetentionReport:
    """What one run of the retention job removed, per kind."""

    visitors: int = 0
    crops: int = 0
    events: int = 0
    live_tracks: int = 0
    crops_budget: int = 0
    previews: int = 0

    def total(self) -> int:
        return self.visitors + self.crops + self.events + self.live_tracks + self.crops_budget + self.previews


@dataclass(frozen=True)
class ErasedReferences:
    """What `VisitorStore.erase_references` removed: rejections naming the identity, merges into or from it, the
    faces those merges kept aside (``merged_faces``), and ``left``: what the backend could not erase, in words
    (empty when everything went)."""

    rejections: int = 0
    merges: int = 0
    left: tuple[str, ...] = ()
    merged_faces: int = 0
