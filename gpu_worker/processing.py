"""Frame processors: what a worker does with a batch of decoded frames (detect, recognise, emit events).

``PerFrameProcessor`` recognises every face of every frame (what the prototype did): each face is its own
one-frame track with its own id (`gpu_worker.session_ids.SESSION_IDS`). The tracked processor (tracker/) replaces it as the default.

A processor works a batch in three steps so that the worker can detect several batches at once
(`gpu_worker.inflight`): ``plan`` and ``finish`` run on the worker's one processing thread, in the order the batches
came (they keep the per-camera state), ``detect`` on any thread (it only reads the plan and runs the detector).
``process`` is the three in a row, for callers with one thread.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gpu_worker.engine import Engine
from gpu_worker.session_ids import SESSION_IDS
from identity.decision import decide_name, without_contradicted
from shared.errors import StoreError
from shared.logs import RateLimitedLog
from shared.protocol import Frame, TrackEvent
from store.base import NegativeStore, PersonGallery

log = logging.getLogger(__name__)
SYNC_S = 0.5  # how often enrolments made by other processes are picked up (as the tracked processor)


@dataclass(frozen=True)
class DecodedFrame:
    """A frame ready for the models: where and when it was captured and its (H, W, 3) uint8 RGB image."""

    camera: str
    seq: int
    capture_ts: float
    image: np.ndarray
    received_ts: float
    link: int = 0  # which of the worker's brokers sent it (its credit goes back there)
    behind_s: float = 0.0  # how much later than its camera's usual the worker took it up (0 offline: never behind)

    @classmethod
    def from_frame(cls, frame: Frame, image: np.ndarray, received_ts: float, link: int = 0,
                   capture_ts: float | None = None) -> "DecodedFrame":
        """``capture_ts``: the frame's capture time as the worker uses it (clamped), by default the frame's own."""
        return cls(frame.camera_id, frame.seq, frame.capture_ts if capture_ts is None else capture_ts, image,
                   received_ts, link)


class StageTimer(Protocol):
    def observe(self, stage: str, seconds: float) -> None: ...


class FrameProcessor(Protocol):
    def plan(self, frames: list[DecodedFrame]) -> list:
        """What ``detect`` is to do with each of these frames (on the processing thread, in order: it may advance
        per-camera schedules)."""
        ...

    def detect(self, plan: list, timer: StageTimer) -> list:
        """The detections of a plan, or of any consecutive part of one (one entry per frame); safe on any thread,
        and it changes nothing the other steps read."""
        ...

    def finish(self, plan: list, found: list, timer: StageTimer) -> list[TrackEvent]:
        """Events caused by the planned frames given their detections (on the processing thread, plans in the
        order they were made)."""
        ...

    def process(self, frames: list[DecodedFrame], timer: StageTimer) -> list[TrackEvent]:
        """Events caused by these frames (several cameras may share one batch): plan, detect, finish."""
        ...

    def commit(self, keep: bool) -> int:
        """After ``finish``: whether the batch's events go to the event log (the worker publishes exactly those it
        keeps); how many were dropped."""
        ...

    def idle(self) -> list[TrackEvent]:
        """Housekeeping while no frame comes (the worker calls it when its inbox is quiet): events it causes, such
        as the ends of tracks of cameras that went silent."""
        ...

    def abandon(self, cameras: set[str] | None = None) -> int:
        """Drop what it holds for these cameras (all when None) without any event; how many tracks went."""
        ...

    def tracking(self) -> frozenset[str]:
        """The cameras it holds a live track of now (the worker's heartbeats tell the brokers: never moved)."""
        ...


def detect_batch(engine: Engine, frames: list[DecodedFrame], timer: StageTimer) -> list:
    """Detections for every frame of a batch in one detector call, timed as the ``detect`` stage."""
    start = time.perf_counter()
    found = engine.detector.detect([f.image for f in frames])
    timer.observe("detect", time.perf_counter() - start)
    return found


class PerFrameProcessor:
    """Detect in one batch, then embed and search every face: ``track_started``, ``track_identified`` (when
    named) and ``track_ended`` per face, with a fresh track id per face."""

    def __init__(self, engine: Engine, gallery: PersonGallery, negatives: NegativeStore | None = None) -> None:
        self.engine = engine
        self.gallery = gallery
        self.negatives = negatives  # operators' corrections: a face nearer to a person's negatives is not him
        self._next_refresh = time.monotonic() + SYNC_S
        self.faces_seen = 0
        self.embeddings = 0
        self.sync_errors = 0
        self._rate_log = RateLimitedLog(log)

    def process(self, frames: list[DecodedFrame], timer: StageTimer) -> list[TrackEvent]:
        return self.finish(frames, self.detect(frames, timer), timer)

    def plan(self, frames: list[DecodedFrame]) -> list[DecodedFrame]:
        """Every frame is detected."""
        return list(frames)

    def detect(self, frames: list[DecodedFrame], timer: StageTimer) -> list:
        return detect_batch(self.engine, frames, timer) if frames else []

    def finish(self, frames: list[DecodedFrame], found: list, timer: StageTimer) -> list[TrackEvent]:
        if time.monotonic() >= self._next_refresh:  # enrolments made by other processes, as the tracked side does
            self._next_refresh = time.monotonic() + SYNC_S
            try:
                self.gallery.sync()
                if self.negatives is not None:
                    self.negatives.sync()
            except StoreError as exc:  # recognition goes on from the replica; tried again after SYNC_S
                self.sync_errors += 1
                self._rate_log.warning("sync", "gallery sync failed (recognition goes on): %s", exc)
        events: list[TrackEvent] = []
        for item, faces in zip(frames, found):
            start = time.perf_counter()
            observations = self.engine.observe(item.image, faces)
            timer.observe("embed", time.perf_counter() - start)
            self.faces_seen += len(faces)
            self.embeddings += len(observations)
            if not observations:
                continue
            start = time.perf_counter()
            hits = self.gallery.search(np.stack([o.embedding for o in observations]), self.engine.cfg.recognition.top_k)
            timer.observe("search", time.perf_counter() - start)
            negatives = self._negatives(np.stack([o.embedding for o in observations]))
            for obs, person_hits, negative_hits in zip(observations, hits, negatives):
                usable = without_contradicted(person_hits, {h.name: h.similarity for h in negative_hits})
                events += self._face_events(item, obs.box, decide_name(usable, self.engine.rule))
        return events

    def _negatives(self, embeddings: np.ndarray) -> list:
        if self.negatives is None:
            return [[] for _ in embeddings]
        return self.negatives.search(embeddings, self.engine.cfg.recognition.top_k)

    def idle(self) -> list[TrackEvent]:
        """Every face is its own one-frame track, ended in the frame it was seen: nothing to end later."""
        return []

    def commit(self, keep: bool) -> int:
        """No event log is written here."""
        return 0

    def abandon(self, cameras: set[str] | None = None) -> int:
        """No state is held between frames."""
        return 0

    def tracking(self) -> frozenset[str]:
        """No track outlives its frame."""
        return frozenset()

    def _face_events(self, frame: DecodedFrame, box: np.ndarray, identity) -> list[TrackEvent]:
        track = SESSION_IDS.next()  # unique across cameras, sessions and restarts; no per-camera state
        now = time.time()
        common = dict(camera=frame.camera, track=track, capture_ts=frame.capture_ts, visitor=False,
                      box=tuple(float(v) for v in box))
        out = [TrackEvent(type="track_started", name=None, similarity=None, margin=None, ts=now,
                          time_to_name_ms=None, duration_s=None, **common)]
        if identity.name is not None:
            out.append(TrackEvent(type="track_identified", name=identity.name, similarity=identity.similarity,
                                  margin=identity.margin, ts=now, time_to_name_ms=0.0, duration_s=0.0, **common))
        out.append(TrackEvent(type="track_ended", name=identity.name, similarity=identity.similarity,
                              margin=identity.margin, ts=now, time_to_name_ms=None, duration_s=0.0, **common))
        return out
