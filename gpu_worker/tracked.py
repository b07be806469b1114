"""The tracked frame processor: detect every frame, track every face, recognise a track only when the scheduler
says so, name it by a quality-weighted vote, hand unknown people a `visitor-N` identity.

Per frame: detect (whole batch) -> per camera tracker update -> quality of each matched face (from its aligned
chip and landmarks) -> the scheduler picks which tracks to embed within the per-frame budget -> embed those
chips in one batch -> search persons -> open-set decision (minus an operator's rejections) -> the track's vote ->
events. A track that stays unknown after ``visitor_after`` embeddings is matched against the visitor gallery (or
becomes a new visitor); when it ends, its best faces refresh that visitor.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpu_worker.align import align_faces
from gpu_worker.decision import Identity, decide
from gpu_worker.engine import STORED_CROP, Engine
from gpu_worker.identity_store import FaceSample, IdentityStore
from gpu_worker.processing import DecodedFrame, StageTimer, detect_batch
from gpu_worker.quality import PERFECT_SHARPNESS, FaceQuality, face_quality, pose_from_landmarks
from gpu_worker.track_state import CameraState, TrackRecord, make_event
from shared.config import ArgusConfig
from shared.protocol import TrackEvent
from shared.types import Detections
from tracker.base import FrameMeta, Track, TrackState
from tracker.factory import build_tracker
from tracker.scheduler import RecognitionScheduler, TrackCandidate
from tracker.voting import TrackIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackBox:
    track: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class _Face:
    """A tracked face in this frame that the scheduler may choose to embed."""

    state: CameraState
    record: TrackRecord
    frame: DecodedFrame
    landmarks: np.ndarray
    chip: np.ndarray
    quality: float


class TrackedProcessor:
    """FrameProcessor that recognises once per track (see the module docstring)."""

    def __init__(self, engine: Engine, store: IdentityStore, cfg: ArgusConfig,
                 on_tracks: Callable[[DecodedFrame, list[TrackBox]], None] | None = None) -> None:
        """``on_tracks`` (optional) sees every frame's live tracks, e.g. for tracking evaluation."""
        self.on_tracks = on_tracks
        self.engine = engine
        self.store = store
        self.cfg = cfg
        self.tcfg = cfg.tracking
        self.cameras: dict[str, CameraState] = {}
        threshold = cfg.visitors.threshold
        self.visitor_threshold = engine.rule.threshold if threshold is None else threshold
        self.embeddings = 0
        self.faces_seen = 0  # faces the pipeline put a box on: detected, or followed by a track between detections
        self.faces_followed = 0  # ... of them followed by prediction on frames the detector skipped

    # ------------------------------------------------------------------------------------------ per batch
    def process(self, frames: list[DecodedFrame], timer: StageTimer) -> list[TrackEvent]:
        """Detect the frames due for detection (``tracking.detect_fps``) in one batch; the others only move their
        camera's tracks by prediction."""
        events: list[TrackEvent] = []
        due = [self._due_for_detection(item) for item in frames]
        detect = [item for item, d in zip(frames, due) if d]
        found = iter(detect_batch(self.engine, detect, timer) if detect else [])
        for item, d in zip(frames, due):
            events += self._frame(item, next(found), timer) if d else self._coast(item, timer)
        events += self._end_idle_cameras(time.monotonic())
        self.store.refresh(time.monotonic())
        return events

    def _camera(self, camera: str) -> CameraState:
        state = self.cameras.get(camera)
        if state is None:
            state = CameraState(camera, build_tracker(self.tcfg.tracker), RecognitionScheduler(self.tcfg.scheduler))
            self.cameras[camera] = state
        state.last_frame_at = time.monotonic()
        return state

    def _due_for_detection(self, item: DecodedFrame) -> bool:
        period = 0.0 if self.tcfg.detect_fps == 0 else 1.0 / self.tcfg.detect_fps
        return self._camera(item.camera).due_for_detection(item.capture_ts, period)

    @staticmethod
    def _meta(item: DecodedFrame) -> FrameMeta:
        height, width = item.image.shape[:2]
        return FrameMeta(item.camera, item.seq, item.capture_ts, width, height)

    def _coast(self, item: DecodedFrame, timer: StageTimer) -> list[TrackEvent]:
        """A frame without detection: tracks move to their predicted boxes; no recognition, no events."""
        state = self._camera(item.camera)
        start = time.perf_counter()
        tracks = state.tracker.predict(self._meta(item))
        timer.observe("track", time.perf_counter() - start)
        boxes = []
        for track in tracks:
            record = state.tracks.get(track.track_id)
            if record is not None:
                record.last_box = tuple(float(v) for v in track.box)
                boxes.append(TrackBox(record.track, record.last_box))
        self.faces_seen += len(boxes)
        self.faces_followed += len(boxes)
        if self.on_tracks is not None:
            self.on_tracks(item, boxes)
        return []

    def _frame(self, item: DecodedFrame, faces: Detections, timer: StageTimer) -> list[TrackEvent]:
        frame = item
        state = self._camera(frame.camera)
        self.faces_seen += len(faces)
        start = time.perf_counter()
        tracks = state.tracker.update(faces, self._meta(frame))
        timer.observe("track", time.perf_counter() - start)
        events: list[TrackEvent] = []
        matched: list[tuple[TrackRecord, Track]] = []
        for track in tracks:
            if track.state is TrackState.ENDED:
                events += self._ended(state, track)
                continue
            record, started = self._record(state, track, frame.capture_ts)
            if started:
                events.append(make_event("track_started", state.camera, record, frame.capture_ts))
            if track.det_index is not None:
                matched.append((record, track))
        if self.on_tracks is not None:
            self.on_tracks(item, [TrackBox(r.track, r.last_box) for r, _ in matched])
        candidates = self._candidates(state, item, faces, matched)
        events += self._recognise(candidates, frame.capture_ts, timer)
        return events

    def _record(self, state: CameraState, track: Track, capture_ts: float) -> tuple[TrackRecord, bool]:
        record = state.tracks.get(track.track_id)
        box = tuple(float(v) for v in track.box)
        if record is not None:
            record.last_box, record.last_capture_ts = box, capture_ts
            return record, False
        identity = TrackIdentity(self.tcfg.voting, self.engine.rule.threshold)
        record = TrackRecord(state.public_id(track), track.started_ts, identity, box, capture_ts)
        state.tracks[track.track_id] = record
        return record, True

    # ------------------------------------------------------------------------------------------ recognition
    def _candidates(self, state: CameraState, item: DecodedFrame, faces: Detections,
                    matched: list[tuple[TrackRecord, Track]]) -> list[_Face]:
        """The matched faces the scheduler may want now, with their chips and quality. A face's quality can only
        be lower than its bound from size and pose alone (perfect sharpness), so faces the scheduler would not
        take even at that bound are skipped before any alignment (most faces, most frames)."""
        wanted = []
        for record, track in matched:
            landmarks = faces.landmarks[track.det_index]
            pose = pose_from_landmarks(landmarks)
            box = faces.boxes[track.det_index]
            bound = FaceQuality(float(min(box[2] - box[0], box[3] - box[1])), PERFECT_SHARPNESS, pose.yaw,
                                pose.pitch).score()
            if state.scheduler.may_choose(self._candidate(record, bound), item.capture_ts):
                wanted.append((record, track))
        if not wanted:
            return []
        index = [t.det_index for _, t in wanted]
        landmarks = faces.landmarks[index]
        chips = align_faces(item.image, landmarks, self.engine.embedder.template)
        return [_Face(state, record, item, landmarks[i], chips[i],
                      face_quality(faces.boxes[index[i]], landmarks[i], chips[i]).score())
                for i, (record, _) in enumerate(wanted)]

    @staticmethod
    def _candidate(record: TrackRecord, quality: float) -> TrackCandidate:
        return TrackCandidate(track_id=record.track, quality=quality,
                              named=record.identity.settled or record.visitor is not None,
                              uncertain=record.identity.uncertain)

    def _recognise(self, faces: list[_Face], capture_ts: float, timer: StageTimer) -> list[TrackEvent]:
        if not faces:
            return []
        by_id = {f.record.track: f for f in faces}
        chosen_ids = set()
        for state in {id(f.state): f.state for f in faces}.values():
            cands = [self._candidate(f.record, f.quality) for f in faces if f.state is state]
            chosen_ids.update(state.scheduler.choose(cands, capture_ts))
        chosen = [by_id[t] for t in sorted(chosen_ids) if t in by_id]
        if not chosen:
            return []
        start = time.perf_counter()
        embeddings = self.engine.embedder.embed(np.stack([f.chip for f in chosen]))
        timer.observe("embed", time.perf_counter() - start)
        self.embeddings += len(chosen)
        start = time.perf_counter()
        hits = self.store.search_persons(embeddings, self.cfg.recognition.top_k)
        timer.observe("search", time.perf_counter() - start)
        events: list[TrackEvent] = []
        for face, embedding, person_hits in zip(chosen, embeddings, hits):
            face.state.scheduler.record(face.record.track, face.quality, capture_ts)
            events += self._observe(face, embedding, person_hits, capture_ts)
        return events

    def _observe(self, face: _Face, embedding: np.ndarray, hits: list, capture_ts: float) -> list[TrackEvent]:
        record = face.record
        record.embeddings += 1
        crop = align_faces(face.frame.image, face.landmarks[None], STORED_CROP)[0]
        source = f"camera:{face.state.camera}/track:{record.track}"
        record.keep_face(face.quality, FaceSample(embedding, crop, STORED_CROP.points.copy(), source),
                         self.cfg.visitors.max_faces)
        identity = self._decide(record, hits)
        change = record.identity.observe(identity.name, identity.similarity or 0.0, identity.margin,
                                         max(face.quality, 1e-3), capture_ts)
        events: list[TrackEvent] = []
        if change is not None and change.name is not None and change.name != record.announced:
            record.announced = change.name
            events.append(make_event("track_identified", face.state.camera, record, capture_ts, name=change.name,
                                     similarity=change.similarity, margin=change.margin,
                                     time_to_name_ms=max(0.0, (capture_ts - record.started_ts) * 1000.0)))
        if record.identity.name is None and record.visitor is None and self.cfg.visitors.enabled \
                and record.embeddings >= self.tcfg.visitor_after:
            events += self._visit(face.state, record, capture_ts)
        return events

    def _decide(self, record: TrackRecord, hits: list) -> Identity:
        """The open-set decision, minus the persons an operator said this track's visitor is not."""
        rejected = self.store.rejections().get(record.visitor or "", frozenset())
        return decide([h for h in hits if h.name not in rejected], self.engine.rule)

    def _visit(self, state: CameraState, record: TrackRecord, capture_ts: float) -> list[TrackEvent]:
        """Link an unknown track to a known visitor, or make it a new one."""
        match = None
        for embedding in record.embeddings_array():
            found = self.store.match_visitor(embedding, self.visitor_threshold)
            if found is not None and (match is None or found.similarity > match.similarity):
                match = found
        if match is not None:
            record.visitor, similarity = match.visitor, match.similarity
            self.store.add_to_visitor(match.visitor, [])
        else:
            record.visitor, similarity = self.store.new_visitor(record.best_samples()), None
        record.announced = record.visitor
        return [make_event("track_identified", state.camera, record, capture_ts, name=record.visitor,
                           similarity=similarity, visitor=True,
                           time_to_name_ms=max(0.0, (capture_ts - record.started_ts) * 1000.0))]

    # ------------------------------------------------------------------------------------------ endings
    def _ended(self, state: CameraState, track: Track) -> list[TrackEvent]:
        record = state.tracks.pop(track.track_id, None)
        state.scheduler.forget(state.public_id(track))
        if record is None:
            return []
        if record.visitor is not None and record.identity.name is None and record.best:
            self.store.add_to_visitor(record.visitor, record.best_samples())
        if record.best:
            self.store.save_crop(state.camera, record.track, record.best[0][1].crop)
        name = record.identity.name or record.visitor
        return [make_event("track_ended", state.camera, record, record.last_capture_ts, name=name,
                           visitor=name is not None and name == record.visitor)]

    def _end_idle_cameras(self, now: float) -> list[TrackEvent]:
        """A camera that sent nothing for ``camera_idle_s`` (it moved to another worker, or stopped): end its
        tracks and forget its state."""
        events: list[TrackEvent] = []
        for camera in [c for c, s in self.cameras.items() if now - s.last_frame_at > self.tcfg.camera_idle_s]:
            state = self.cameras.pop(camera)
            for record in state.tracks.values():
                name = record.identity.name or record.visitor
                events.append(make_event("track_ended", camera, record, record.last_capture_ts, name=name,
                                         visitor=name is not None and name == record.visitor))
        return events
