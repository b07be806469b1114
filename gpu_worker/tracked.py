"""The tracked frame processor: detect every frame, track every face, recognise a track only when the scheduler
says so, name it by a quality-weighted vote, hand unknown people a `visitor-N` identity.

Per frame: detect (whole batch) -> per camera tracker update -> quality of each matched face (from its aligned
chip and landmarks) -> the scheduler picks which tracks to embed within the per-frame budget -> embed those
chips in one batch -> search persons (and their negative evidence) -> the face's vote (`identity.decision.decide`,
minus an operator's rejections and corrections) -> the track's vote (`identity.voting`), which names the track
only when its template passes the naming rule (`identity.naming.TrackNaming.confirm`) -> events. A track that
stays unknown after ``visitor_after`` embeddings, once one of its kept faces is at least ``visitors.min_face_px``,
is matched against the visitor gallery or becomes a new visitor (one atomic store operation; only faces that large
are used); when it ends, those faces refresh that visitor. A visitor's track later named as an enrolled person
merges the visitor into that person (`identity.merges.merge_visitor`): the naming rule confirmed the visitor's own
faces as that person first. Live tracks an operator corrected lose their name at the next sync. The identity rules
live in `identity`; this module only calls them.

Everything goes through the store interface (`store.base.Store`): person search, visitors, crops, the event log
and live tracks (`gpu_worker.records.TrackRecorder`). Other processes' changes (enrolments, operator actions) are
picked up every ``SYNC_S``; retention is not done here (`store.retention.RetentionJob`).

A store that fails (StoreError: its server is down) does not stop recognition: search is the in-process replica,
and a failing sync, visitor match, ``seen`` or merge is counted in ``recorder.errors``, logged once a minute, and
left (the replica syncs again after ``SYNC_S``; a track that got no visitor asks again at its next embedding). A
worker's store is a `store.buffered.BufferedStore`: its writes wait while the store is unavailable, and
``idle()`` flushes them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gpu_worker.align import align_faces
from gpu_worker.config import WorkerSettings
from gpu_worker.distant import Found, FramePlan, StreamDetection
from gpu_worker.engine import STORED_CROP, Engine
from gpu_worker.preview import PreviewBox, PreviewPublisher
from gpu_worker.processing import DecodedFrame, StageTimer
from gpu_worker.quality import (
    PERFECT_SHARPNESS,
    FaceQuality,
    face_quality,
    pose_from_landmarks,
)
from gpu_worker.records import TrackRecorder
from gpu_worker.track_state import CameraState, TrackRecord, live_track, make_event
from identity.corrections import track_source
from identity.decision import decide
from identity.merges import merge_visitor
from identity.naming import KeptFace, LiveName, TrackNaming
from identity.voting import TrackIdentity
from shared.errors import StoreError
from shared.protocol import TrackEvent
from shared.types import Detections
from store.base import Store
from store.buffered import BufferedStore
from store.types import FaceSample, is_visitor_name
from tracker.base import FrameMeta, Track, TrackState
from tracker.factory import build_tracker
from tracker.scheduler import RecognitionScheduler, TrackCandidate

log = logging.getLogger(__name__)
SYNC_S = 0.5  # how often other processes' changes (enrolments, merges) are picked up: an enrolment made on any host
# is searchable here within SYNC_S plus one store round trip (a sync that finds nothing new is one read)
REJECTIONS_S = 2.0  # how often operators' rejections are re-read (a read over every visitor)


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
    size_px: float  # the box's shorter side (FaceQuality.size_px)


class TrackedProcessor:
    """FrameProcessor that recognises once per track (see the module docstring)."""

    def __init__(self, engine: Engine, store: Store, cfg: WorkerSettings,
                 on_tracks: Callable[[DecodedFrame, list[TrackBox]], None] | None = None,
                 worker: str | None = None, live_ttl_s: float = 5.0) -> None:
        """``on_tracks`` (optional) sees every frame's live tracks, e.g. for tracking evaluation; ``worker`` is put
        on the events and live tracks this processor writes to the store."""
        self.on_tracks = on_tracks
        self.engine = engine
        self.store = store
        self.recorder = TrackRecorder(store, live_ttl_s, worker)
        self.previews = PreviewPublisher(cfg.tracking.preview, store.live, worker, self.recorder.failed)
        self._rejections = store.visitors.rejections()
        self._next_sync = time.monotonic() + SYNC_S
        self._next_rejections = time.monotonic() + REJECTIONS_S
        self._negatives_unread = True  # live tracks are checked against operators' corrections at the first sync
        self.cfg = cfg
        self.tcfg = cfg.tracking
        self.naming = TrackNaming(store, engine.rule, cfg.recognition)
        self.stream = StreamDetection(engine, cfg.tracking.distant)
        self.cameras: dict[str, CameraState] = {}
        threshold = cfg.visitors.threshold
        self.visitor_threshold = engine.rule.threshold if threshold is None else threshold
        self.embeddings = 0
        self.faces_seen = 0  # faces the pipeline put a box on: detected, or followed by a track between detections
        self.faces_followed = 0  # ... of them followed by prediction on frames the detector skipped

    # ------------------------------------------------------------------------------------------ per batch
    def process(self, frames: list[DecodedFrame], timer: StageTimer) -> list[TrackEvent]:
        """Detect the frames due for detection (``tracking.detect_fps``, ``tracking.distant``) in one batch; the
        others only move their camera's tracks by prediction."""
        plans = self.plan(frames)
        events = self.finish(plans, self.detect(plans, timer), timer)
        self.commit(True)
        return events

    def plan(self, frames: list[DecodedFrame]) -> list[FramePlan]:
        """Which frames are detected, and how (in order, per camera: it advances the cameras' schedules)."""
        return [self._plan(item) for item in frames]

    def _plan(self, item: DecodedFrame) -> FramePlan:
        state = self._camera(item.camera)
        due = self._due_for_detection(item)
        lost = [r.last_box for r in state.tracks.values() if r.last_capture_ts < state.distant.seen_ts] \
            if due and self.tcfg.distant.regions else []
        return self.stream.plan(state.distant, item, due, lost)

    def detect(self, plans: list[FramePlan], timer: StageTimer) -> list[Found | None]:
        """The planned detections (any thread: reads nothing but the plans)."""
        return self.stream.detect(plans, timer)

    def finish(self, plans: list[FramePlan], found: list[Found | None], timer: StageTimer) -> list[TrackEvent]:
        """The batch's events; they reach the event log only with ``commit(True)`` (the worker's stale check
        decides first, so that the log and the live stream hold the same events). Other processes' changes are
        picked up before the batch, while no event of it is waiting (a withdrawn name writes the log first)."""
        self._sync(time.monotonic())
        events: list[TrackEvent] = []
        for plan, faces in zip(plans, found):
            if faces is None:
                events += self._coast(plan.frame, timer)
                continue
            self._camera(plan.frame.camera).distant.found(plan, faces)
            events += self._frame(plan.frame, faces.faces, timer)
        return events + self._end_idle_cameras(time.monotonic())

    def commit(self, keep: bool) -> int:
        """The events of the batch finished last go to the event log (``keep``) or nowhere (the worker judged it
        stale or failed: it publishes none of them either); how many were dropped. A visitor merged during the
        batch wrote the batch's earlier events first (the merge renames them in the log)."""
        if not keep:
            return self.recorder.discard()
        self.recorder.flush()
        if isinstance(self.store, BufferedStore):
            self.store.flush()  # writes waiting for a store that was unavailable
        return 0

    def idle(self) -> list[TrackEvent]:
        """Housekeeping that must run with or without frames (the worker calls it when its inbox is quiet): end
        the tracks of cameras that went silent, pick up other processes' store changes, write the event log."""
        events = self._end_idle_cameras(time.monotonic())
        self._sync(time.monotonic())
        self.commit(True)
        return events

    def _sync(self, now: float) -> None:
        """Other processes' changes, every SYNC_S; a store that fails is counted and tried again next time."""
        if now < self._next_sync:
            return
        self._next_sync = now + SYNC_S
        try:
            self.store.persons.sync()
            self.store.visitors.sync()
            if self.store.negatives.sync() or self._negatives_unread:
                self._negatives_unread = True  # until every live track was checked: a failure checks again
                self._withdraw_rejected()
                self._negatives_unread = False
            if now >= self._next_rejections:
                self._next_rejections = now + REJECTIONS_S
                self._rejections = self.store.visitors.rejections()
        except StoreError as exc:
            self.recorder.failed("sync", exc)

    def _withdraw_rejected(self) -> None:
        """Live tracks an operator said are not the person they are named as (`identity.naming`) lose the name
        now: it leaves their vote for good, their live entry and whatever this worker logged of them since (their
        ``track_ended`` will not carry it)."""
        records = {(state.camera, record.track): (state, record) for state in self.cameras.values()
                   for record in state.tracks.values()}
        live = [LiveName(camera, record.track, record.identity.name) for (camera, _), (_, record) in records.items()
                if record.identity.name is not None and not is_visitor_name(record.identity.name)]
        for item in self.naming.rejected(live):
            state, record = records[(item.camera, item.track)]
            record.identity.withdraw(item.name)
            if record.announced == item.name:
                record.announced, record.similarity = None, None
            self.recorder.live(live_track(state, record), force=True)
            self.recorder.flush()
            self.store.events.unname_track(item.camera, item.track, item.name)
            log.info("track %s/%d is not %s (an operator's correction): name withdrawn", item.camera, item.track,
                     item.name)

    def _camera(self, camera: str) -> CameraState:
        state = self.cameras.get(camera)
        if state is None:
            state = CameraState(camera, build_tracker(self.tcfg.tracker), RecognitionScheduler(self.tcfg.scheduler),
                                worker=self.recorder.worker)
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
        self._preview(state, item)
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
                events.append(self.recorder.event(make_event("track_started", state, record,
                                                             frame.capture_ts)))
            self.recorder.live(live_track(state, record), force=started)
            if track.det_index is not None:
                matched.append((record, track))
        if self.on_tracks is not None:
            self.on_tracks(item, [TrackBox(r.track, r.last_box) for r, _ in matched])
        candidates = self._candidates(state, item, faces, matched)
        events += self._recognise(candidates, frame.capture_ts, timer)
        self._preview(state, item)
        return events

    def _preview(self, state: CameraState, item: DecodedFrame) -> None:
        def boxes() -> list[PreviewBox]:
            return [PreviewBox(r.last_box, _label(r), r.announced is not None) for r in state.tracks.values()
                    if r.last_capture_ts >= item.capture_ts]
        self.previews.frame(item.camera, item.seq, item.image, boxes)

    def _record(self, state: CameraState, track: Track, capture_ts: float) -> tuple[TrackRecord, bool]:
        record = state.tracks.get(track.track_id)
        box = tuple(float(v) for v in track.box)
        if record is not None:
            record.last_box, record.last_capture_ts = box, capture_ts
            return record, False
        identity = TrackIdentity(self.tcfg.voting, self.engine.rule.threshold)
        record = TrackRecord(state.public_id(), track.started_ts, identity, box, capture_ts)
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
            size = float(min(box[2] - box[0], box[3] - box[1]))
            bound = FaceQuality(size, PERFECT_SHARPNESS, pose.yaw, pose.pitch).score()
            if state.scheduler.may_choose(self._candidate(record, bound, size), item.capture_ts):
                wanted.append((record, track))
        if not wanted:
            return []
        index = [t.det_index for _, t in wanted]
        landmarks = faces.landmarks[index]
        chips = align_faces(item.image, landmarks, self.engine.embedder.template)
        qualities = [face_quality(faces.boxes[index[i]], landmarks[i], chips[i]) for i in range(len(wanted))]
        return [_Face(state, record, item, landmarks[i], chips[i], qualities[i].score(), qualities[i].size_px)
                for i, (record, _) in enumerate(wanted)]

    @staticmethod
    def _candidate(record: TrackRecord, quality: float, size_px: float) -> TrackCandidate:
        return TrackCandidate(track_id=record.track, quality=quality, size_px=size_px,
                              named=record.identity.settled or record.visitor is not None,
                              uncertain=record.identity.uncertain, misses=record.identity.misses)

    def _recognise(self, faces: list[_Face], capture_ts: float, timer: StageTimer) -> list[TrackEvent]:
        if not faces:
            return []
        by_id = {f.record.track: f for f in faces}
        chosen_ids = set()
        for state in {id(f.state): f.state for f in faces}.values():
            cands = [self._candidate(f.record, f.quality, f.size_px) for f in faces if f.state is state]
            chosen_ids.update(state.scheduler.choose(cands, capture_ts))
        chosen = [by_id[t] for t in sorted(chosen_ids) if t in by_id]
        if not chosen:
            return []
        start = time.perf_counter()
        embeddings = self.engine.embedder.embed(np.stack([f.chip for f in chosen]))
        timer.observe("embed", time.perf_counter() - start)
        self.embeddings += len(chosen)
        start = time.perf_counter()
        hits = self.store.persons.search(embeddings, self.cfg.recognition.top_k)
        negatives = self.store.negatives.search(embeddings, self.cfg.recognition.top_k)
        timer.observe("search", time.perf_counter() - start)
        events: list[TrackEvent] = []
        for face, embedding, person_hits, negative_hits in zip(chosen, embeddings, hits, negatives):
            face.state.scheduler.record(face.record.track, face.quality, capture_ts)
            events += self._observe(face, embedding, self._usable(face.record, person_hits, negative_hits),
                                    capture_ts)
        return events

    def _observe(self, face: _Face, embedding: np.ndarray, hits: list, capture_ts: float) -> list[TrackEvent]:
        record = face.record
        record.embeddings += 1
        crop = align_faces(face.frame.image, face.landmarks[None], STORED_CROP)[0]
        source = track_source(face.state.camera, record.track)
        record.keep_face(face.quality, FaceSample(embedding, crop, STORED_CROP.points.copy(), source),
                         self.cfg.visitors.max_faces, face.size_px)
        identity = decide(hits, self.engine.rule)
        change = record.identity.observe(identity.name, identity.similarity or 0.0, identity.margin,
                                         max(face.quality, 1e-3), capture_ts,
                                         confirm=lambda name: self._confirm(record, name))
        events: list[TrackEvent] = []
        if change is not None and change.name is not None and change.name != record.announced:
            events.append(self._named(face.state, record, change, capture_ts))
        visitors = self.cfg.visitors
        if record.identity.name is None and record.visitor is None and visitors.enabled \
                and record.embeddings >= self.tcfg.visitor_after and record.best_samples(visitors.min_face_px):
            events += self._visit(face.state, record, capture_ts)
        return events

    def _named(self, state: CameraState, record: TrackRecord, change, capture_ts: float) -> TrackEvent:
        """A track's vote settled on an enrolled person. A track that was a visitor merges that visitor into the
        person: its faces stop answering as a visitor, its past events and live tracks name the person."""
        merged = None
        if record.visitor is not None and not is_visitor_name(change.name):
            merged, record.visitor = record.visitor, None
            if record.may_merge:  # its own faces were checked: the visitor is this person
                self.recorder.flush()  # this batch's events naming the visitor go to the log first, to be renamed
                self._merge(merged, change.name)
            else:  # gone meanwhile (expired, or merged by another worker): nothing of it to merge
                merged = None
        why = record.naming if record.naming is not None and record.naming.name == change.name else None
        similarity = change.similarity if why is None else why.similarity
        self._announce(record, change.name, similarity, capture_ts)
        self._keep_crop(state.camera, record)
        event = make_event("track_identified", state, record, capture_ts, name=change.name, similarity=similarity,
                           margin=change.margin if why is None else why.margin, merged_visitor=merged,
                           time_to_name_ms=record.time_to_name_ms, votes=change.votes)
        self.recorder.live(live_track(state, record), force=True)
        return self.recorder.event(event)

    def _keep_crop(self, camera: str, record: TrackRecord) -> None:
        """A named track's best face so far, so its live entry shows it (replaced by the best at its end)."""
        if record.best:
            record.crop = self.recorder.save_crop(camera, record.track, record.best[0][1].crop)

    def _merge(self, visitor: str, person: str) -> None:
        try:
            report = merge_visitor(self.store, visitor, person, actor=f"worker:{self.recorder.worker or '-'}")
        except StoreError as exc:  # the track is named all the same; the visitor stays in the store
            self.recorder.failed("merge_visitor", exc)
            return
        log.info("%s is %s: merged (%d face(s) removed, %d event(s) renamed)", visitor, person,
                 report.faces_removed, report.events)

    @staticmethod
    def _announce(record: TrackRecord, name: str, similarity: float | None, capture_ts: float) -> None:
        record.announced, record.similarity = name, similarity
        record.time_to_name_ms = max(0.0, (capture_ts - record.started_ts) * 1000.0)

    def _confirm(self, record: TrackRecord, name: str) -> bool:
        """Whether the track as a whole is ``name`` (`identity.naming.TrackNaming.confirm`); the decision on its
        template is kept as why it is named. A store that fails confirms nothing now; a later face asks again."""
        faces = [KeptFace(quality, sample.embedding) for quality, sample, _ in record.best]
        try:
            confirmation = self.naming.confirm(faces, name, record.visitor, self._rejected(record))
        except StoreError as exc:
            self.recorder.failed("confirm", exc)
            return False
        record.naming = confirmation.decision
        record.may_merge = confirmation.merge
        return confirmation.confirmed

    def _rejected(self, record: TrackRecord) -> frozenset[str]:
        """The persons an operator said this track's visitor is not."""
        return self._rejections.get(record.visitor or "", frozenset())

    def _usable(self, record: TrackRecord, hits: list, negatives: list) -> list:
        return self.naming.usable(hits, negatives, self._rejected(record))

    def _visit(self, state: CameraState, record: TrackRecord, capture_ts: float) -> list[TrackEvent]:
        """Link an unknown track to a known visitor or make it a new one: one atomic store operation. A store
        that fails leaves the track without a visitor; it asks again at its next embedding."""
        try:
            match = self.store.visitors.match_or_create(record.best_samples(self.cfg.visitors.min_face_px),
                                                        self.visitor_threshold, self.cfg.visitors.max_faces)
        except StoreError as exc:
            self.recorder.failed("match_or_create", exc)
            return []
        record.visitor = match.visitor
        self._announce(record, match.visitor, match.similarity, capture_ts)
        self._keep_crop(state.camera, record)
        event = make_event("track_identified", state, record, capture_ts, name=record.visitor,
                           similarity=match.similarity, visitor=True, time_to_name_ms=record.time_to_name_ms)
        self.recorder.live(live_track(state, record), force=True)
        return [self.recorder.event(event)]

    # ------------------------------------------------------------------------------------------ endings
    def _ended(self, state: CameraState, track: Track) -> list[TrackEvent]:
        record = state.tracks.pop(track.track_id, None)
        if record is None:
            return []
        state.scheduler.forget(record.track)
        return [self._finish(state, record)]

    def _finish(self, state: CameraState, record: TrackRecord) -> TrackEvent:
        """A track is over: its best faces refresh its visitor, its best face is kept as the track's crop, it
        leaves the live tracks, and its ``track_ended`` event (with the crop) goes to the event log."""
        large = record.best_samples(self.cfg.visitors.min_face_px)  # a visitor keeps only faces it could start from
        if record.visitor is not None and record.identity.name is None and large:
            try:
                self.store.visitors.seen(record.visitor, large, self.cfg.visitors.max_faces)
            except StoreError as exc:
                self.recorder.failed("visitor_seen", exc)
        camera = state.camera
        crop = self.recorder.save_crop(camera, record.track, record.best[0][1].crop) if record.best else None
        self.recorder.ended(camera, record.track)
        name = record.identity.name or record.visitor
        event = make_event("track_ended", state, record, record.last_capture_ts, name=name,
                           visitor=name is not None and name == record.visitor)
        return self.recorder.event(event, crop)

    def abandon(self, cameras: set[str] | None = None) -> int:
        """Drop the track state of these cameras (all when None) without any event: this worker was paused long
        enough to be declared dead, so the broker may have given them to another worker, which tracks them now.
        Their live entries are removed; the next frame of such a camera starts a new epoch. How many tracks."""
        dropped = 0
        for camera in [c for c in self.cameras if cameras is None or c in cameras]:
            state = self.cameras.pop(camera)
            self.previews.forget(camera)
            for record in state.tracks.values():
                self.recorder.ended(camera, record.track)
                dropped += 1
        return dropped

    def tracking(self) -> frozenset[str]:
        """The cameras with a live track now."""
        return frozenset(camera for camera, state in self.cameras.items() if state.tracks)

    def _end_idle_cameras(self, now: float) -> list[TrackEvent]:
        """A camera that sent nothing for ``camera_idle_s`` (it moved to another worker, or stopped): end its
        tracks as if they were lost, and forget its state."""
        events: list[TrackEvent] = []
        for camera in [c for c, s in self.cameras.items() if now - s.last_frame_at > self.tcfg.camera_idle_s]:
            state = self.cameras.pop(camera)
            self.previews.forget(camera)
            events += [self._finish(state, record) for record in state.tracks.values()]
        return events


def _label(record: TrackRecord) -> str:
    if record.announced is None:
        return "?"
    return record.announced if record.similarity is None else f"{record.announced} {record.similarity:.2f}"
