"""`argusnet eval openset`, video part: strangers on real footage against one enrolled person at a time.

Each gallery holds one person alone (every photo of one identity that passes the enrolment gate, or the demo
portrait). For each gallery the worker's own frame processor (`gpu_worker.tracked.TrackedProcessor`, with the
gallery in a fresh local store, visitors and all) watches every clip at every resolution, ``loops`` times, as a
camera node sends it (`evaluation.replay`). Nobody in the clips is enrolled, so every track named as the enrolled
person is a stranger named: ``strangers_named`` counts those tracks, ``stranger_tracks`` the tracks seen.

Mated (``--mated``): a person of the clip enrolled from one face of his first appearance (the best face the worker
kept for that track, as an operator's "Confirm" on it enrols it) must be named on his later appearances, and
nobody else may be. The clip repeats, so a later track is his when its boxes overlap his first track's boxes on
the same clip frames (IoU >= 0.5 on most of the frames they share).
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from evaluation.replay import CameraFrame, Clip, camera_frames
from gpu_worker.align import align_faces
from gpu_worker.engine import STORED_CROP, Engine
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackBox, TrackedProcessor
from gpu_worker.video import NullTimer
from shared.protocol import TrackEvent
from shared.types import iou_matrix
from store import open_store
from store.base import Store
from store.config import LocalStoreConfig
from store.types import FaceSample

MATCH_IOU = 0.5


@dataclass(frozen=True)
class Gallery:
    """One person enrolled alone: ``faces`` are the enrolment faces that passed the gate."""

    name: str
    source: str
    faces: tuple[FaceSample, ...]


@dataclass
class Replay:
    """What one camera's replay produced: events with the loop they came in, and every track's boxes per clip
    frame (loop, source_index) -> box."""

    camera: str
    events: list[tuple[int, TrackEvent]] = field(default_factory=list)
    boxes: dict[int, dict[tuple[int, int], tuple[float, ...]]] = field(default_factory=lambda: defaultdict(dict))
    first_loop: dict[int, int] = field(default_factory=dict)

    @property
    def tracks(self) -> set[int]:
        return set(self.boxes)

    def named(self, name: str) -> dict[int, float | None]:
        """Tracks ever announced as ``name`` (not as a visitor) -> the similarity they were named with."""
        return {e.track: e.similarity for _, e in self.events
                if e.type == "track_identified" and e.name == name and not e.visitor}


def new_store(engine: Engine, directory: Path, galleries: Iterable[Gallery]) -> Store:
    store = open_store(LocalStoreConfig(path=directory), engine.cfg.gallery, engine.embedder.name,
                       engine.embedder.dim, create=True)
    for gallery in galleries:
        store.persons.add_person(gallery.name, list(gallery.faces))
    return store


def replay(processor: TrackedProcessor, camera: str, frames: Iterable[CameraFrame], start_ts: float) -> Replay:
    """Feed ``frames`` to ``processor`` as camera ``camera``; returns the events and boxes."""
    out = Replay(camera)
    current: list[CameraFrame] = []

    def on_tracks(item: DecodedFrame, boxes: list[TrackBox]) -> None:
        frame = current[0]
        for box in boxes:
            out.boxes[box.track][(frame.loop, frame.source_index)] = box.box
            out.first_loop.setdefault(box.track, frame.loop)

    processor.on_tracks = on_tracks
    for seq, frame in enumerate(frames):
        current[:] = [frame]
        item = DecodedFrame(camera, seq, start_ts + frame.capture_ts, frame.image, start_ts + frame.capture_ts)
        out.events += [(frame.loop, e) for e in processor.process([item], NullTimer())]
    processor.on_tracks = None
    return out


@dataclass(frozen=True)
class Camera:
    clip: Clip
    height: int

    @property
    def name(self) -> str:
        return f"{self.clip.path.stem}-{self.height}p"


def strangers_run(engine: Engine, gallery: Gallery, cameras: list[Camera], fps: float, loops: int,
                  tmp: Path) -> dict:
    """One gallery against every camera: the tracks named as its person."""
    with new_store(engine, tmp / "store", [gallery]) as store:
        processor = TrackedProcessor(engine, store, engine.cfg)
        per_camera = []
        start = 1.0e9
        for camera in cameras:
            result = replay(processor, camera.name, camera_frames(camera.clip, camera.height, fps, loops), start)
            start += loops * camera.clip.duration_s + 60.0
            named = result.named(gallery.name)
            per_camera.append({
                "camera": camera.name, "clip": str(camera.clip.path), "height": camera.height,
                "tracks": len(result.tracks), "strangers_named": len(named),
                "similarities": sorted(round(float(s), 4) for s in named.values() if s is not None),
                "loops_named": sorted({loop for loop, e in result.events
                                       if e.type == "track_identified" and e.track in named}),
            })
    return {"gallery": gallery.name, "source": gallery.source, "cameras": per_camera,
            "strangers_named": sum(c["strangers_named"] for c in per_camera),
            "tracks": sum(c["tracks"] for c in per_camera)}


def run_strangers(engine: Engine, galleries: list[Gallery], cameras: list[Camera], fps: float, loops: int,
                  progress: Callable[[], None]) -> dict:
    runs = []
    for gallery in galleries:
        with tempfile.TemporaryDirectory(prefix="argusnet-openset-") as tmp:
            runs.append(strangers_run(engine, gallery, cameras, fps, loops, Path(tmp)))
        progress()
    named = sum(r["strangers_named"] for r in runs)
    return {"strangers_named": named, "stranger_tracks": sum(r["tracks"] for r in runs),
            "galleries": len(galleries),
            "named_by": sorted({(r["gallery"], c["camera"]) for r in runs for c in r["cameras"]
                                if c["strangers_named"]}),
            "runs": runs}


# ------------------------------------------------------------------------------------------------ mated
def same_person(first: dict[tuple[int, int], tuple[float, ...]],
                later: dict[tuple[int, int], tuple[float, ...]], near: int = 2) -> bool:
    """Whether a later track follows a first-loop track's boxes: on most of the later track's frames that have a
    first-loop frame at most ``near`` clip frames away (loops sample the clip at other phases), the boxes overlap
    at IoU >= MATCH_IOU."""
    by_index = {index: box for (_, index), box in first.items()}
    pairs = []
    for (_, index), box in later.items():
        nearest = min(by_index, key=lambda i: abs(i - index))
        if abs(nearest - index) <= near:
            pairs.append((by_index[nearest], box))
    if len(pairs) < 2:
        return False
    a = np.array([p[0] for p in pairs], np.float32)
    b = np.array([p[1] for p in pairs], np.float32)
    return float(np.mean(np.diag(iou_matrix(a, b)) >= MATCH_IOU)) > 0.5


def first_appearances(engine: Engine, camera: Camera, fps: float, people: int, min_px: float,
                      tmp: Path) -> list[tuple[int, dict, FaceSample]]:
    """One loop with nobody enrolled; the ``people`` first-loop tracks whose largest face is largest (at least
    ``min_px`` tall), each with its boxes and that face (detected, aligned and embedded from that frame)."""
    with new_store(engine, tmp / "first", []) as store:
        processor = TrackedProcessor(engine, store, engine.cfg)
        first = replay(processor, camera.name, camera_frames(camera.clip, camera.height, fps, 1), 1.0e9)
    largest = {track: max(boxes.items(), key=lambda kv: kv[1][3] - kv[1][1]) for track, boxes in first.boxes.items()}
    ranked = sorted(largest.items(), key=lambda kv: -(kv[1][1][3] - kv[1][1][1]))
    out = []
    for track, ((_, index), box) in ranked:
        if len(out) == people or box[3] - box[1] < min_px:
            break
        sample = face_at(engine, camera.clip.received(index, camera.height), box,
                         f"{camera.name}/frame:{index}/track:{track}")
        if sample is not None:
            out.append((track, first.boxes[track], sample))
    return out


def face_at(engine: Engine, image: np.ndarray, box: tuple[float, ...], source: str) -> FaceSample | None:
    """The detected face of ``image`` that overlaps ``box`` most (IoU >= MATCH_IOU), embedded as an enrolment."""
    faces = engine.detector.detect([image])[0]
    if len(faces) == 0:
        return None
    iou = iou_matrix(np.array([box], np.float32), faces.boxes)[0]
    best = int(np.argmax(iou))
    if iou[best] < MATCH_IOU:
        return None
    one = faces.select([best])
    observation = engine.observe(image, one)[0]
    crop = align_faces(image, one.landmarks, STORED_CROP)[0]
    return FaceSample(observation.embedding, crop, STORED_CROP.points.copy(), source)


def mated_run(engine: Engine, camera: Camera, fps: float, loops: int, people: int, min_px: float,
              progress: Callable[[], None]) -> dict:
    """Each of ``people`` persons of the clip enrolled alone from one face of his first appearance; loops 1.. of
    the clip replayed: his later tracks named (``named``), other tracks named as him (``wrong``)."""
    with tempfile.TemporaryDirectory(prefix="argusnet-mated-") as tmp_name:
        tmp = Path(tmp_name)
        chosen = first_appearances(engine, camera, fps, people, min_px, tmp)
        persons = []
        for n, (track, boxes, sample) in enumerate(chosen):
            name = f"{camera.name}-person-{n + 1}"
            with new_store(engine, tmp / f"mated-{n}", [Gallery(name, sample.source, (sample,))]) as store:
                processor = TrackedProcessor(engine, store, engine.cfg)
                frames = (f for f in camera_frames(camera.clip, camera.height, fps, loops) if f.loop > 0)
                later = replay(processor, camera.name, frames, 1.0e9)
            named = later.named(name)
            his = {t for t, b in later.boxes.items() if same_person(boxes, b)}
            persons.append({"person": name, "enrolled_from": sample.source, "later_tracks": len(his),
                            "named": len(his & set(named)), "wrong": len(set(named) - his)})
            progress()
    return {"camera": camera.name, "persons": persons,
            "later_tracks": sum(p["later_tracks"] for p in persons), "named": sum(p["named"] for p in persons),
            "wrong": sum(p["wrong"] for p in persons)}
