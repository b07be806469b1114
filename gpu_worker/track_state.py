"""What the tracked processor remembers per camera and per track, and the events it builds from it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gpu_worker.distant import DistantState
from gpu_worker.session_ids import SESSION_IDS
from identity.decision import Identity
from identity.voting import TrackIdentity
from shared.protocol import TrackEvent
from store.types import FaceSample, LiveTrack
from tracker.base import Tracker
from tracker.scheduler import RecognitionScheduler

DETECT_TOLERANCE_S = 1e-3  # timestamps jitter: a gap this much over the period still counts as on time



@dataclass
class TrackRecord:
    """One live track: its identity vote, the visitor it was linked to, its best faces and what was announced."""

    track: int
    started_ts: float
    identity: TrackIdentity
    last_box: tuple[float, float, float, float]
    last_capture_ts: float
    visitor: str | None = None
    announced: str | None = None
    time_to_name_ms: float | None = None
    similarity: float | None = None  # of the name announced last
    embeddings: int = 0
    best: list[tuple[float, FaceSample, float]] = field(default_factory=list)  # (quality, face, size px)
    crop: str | None = None  # the store key of its best face, once it was named
    naming: Identity | None = None  # the decision on its template that confirmed its latest name (why it was named)
    may_merge: bool = False  # that confirmation also found its visitor's own faces to be that person

    def keep_face(self, quality: float, sample: FaceSample, limit: int, size_px: float = 0.0) -> None:
        """Keep the ``limit`` best faces by quality (``size_px``: the face's shorter side)."""
        self.best.append((quality, sample, size_px))
        self.best.sort(key=lambda item: -item[0])
        del self.best[limit:]

    def best_samples(self, min_px: float = 0.0) -> list[FaceSample]:
        """The kept faces, best first; with ``min_px``, only those at least that large (shorter side)."""
        return [sample for _, sample, size in self.best if size >= min_px]



@dataclass
class CameraState:
    """A camera's tracker, scheduler and live tracks on this worker."""

    camera: str
    tracker: Tracker
    scheduler: RecognitionScheduler
    tracks: dict[int, TrackRecord] = field(default_factory=dict)
    last_frame_ts: float | None = None  # capture time of the camera's latest frame on this worker
    last_detect_ts: float | None = None  # ... and of its latest frame the detector ran on
    last_frame_at: float = field(default_factory=time.monotonic)
    worker: str | None = None  # put on its events with the epoch (TrackEvent.worker, .epoch)
    epoch: int = field(default_factory=SESSION_IDS.next)  # this tracking session of the camera
    distant: DistantState = field(default_factory=DistantState)  # its fine passes and small faces (distant faces)

    @staticmethod
    def public_id() -> int:
        """A new track's id (TrackEvent.track): unique across sessions and restarts (``SessionIds``)."""
        return SESSION_IDS.next()

    def due_for_detection(self, capture_ts: float, period_s: float) -> bool:
        """Whether the detector must run on this frame so that no more than ``period_s`` passes between two detected
        frames, judging the next frame to come one frame interval (the latest one seen) later. Always for the
        first frame, after a pause, and with ``period_s`` 0."""
        gap = 0.0 if self.last_frame_ts is None else max(0.0, capture_ts - self.last_frame_ts)
        self.last_frame_ts = capture_ts if self.last_frame_ts is None else max(self.last_frame_ts, capture_ts)
        due = self.last_detect_ts is None or period_s <= 0.0 or \
            capture_ts - self.last_detect_ts + gap > period_s + DETECT_TOLERANCE_S
        if due:
            self.last_detect_ts = capture_ts
        return due


def make_event(kind: str, state: CameraState, record: TrackRecord, capture_ts: float, name: str | None = None,
               similarity: float | None = None, margin: float | None = None, visitor: bool = False,
               time_to_name_ms: float | None = None, merged_visitor: str | None = None,
               votes: int | None = None) -> TrackEvent:
    return TrackEvent(type=kind, camera=state.camera, track=record.track, name=name, similarity=similarity,
                      margin=margin, ts=time.time(), capture_ts=capture_ts, box=record.last_box,
                      time_to_name_ms=time_to_name_ms, duration_s=max(0.0, record.last_capture_ts - record.started_ts),
                      visitor=visitor, merged_visitor=merged_visitor, worker=state.worker, epoch=state.epoch,
                      votes=votes)


def live_track(state: CameraState, record: TrackRecord) -> LiveTrack:
    """The live-tracks entry of a track: its latest box, and the name it was last announced with."""
    name = record.announced
    return LiveTrack(camera=state.camera, track=record.track, name=name, visitor=name is not None and name == record.visitor,
                     similarity=record.similarity, box=record.last_box, started_ts=record.started_ts,
                     updated_ts=record.last_capture_ts, time_to_name_ms=record.time_to_name_ms, crop=record.crop,
                     worker=state.worker)
