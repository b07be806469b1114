"""`argusnet eval openset`, video part: strangers on real footage against one enrolled person at a time.

Each gallery holds one person alone (every photo of one identity that passes the enrolment gate, or the demo
portrait). For each gallery the worker's own frame processor (`gpu_worker.tracked.TrackedProcessor`, with the
gallery in a fresh local store, visitors and all) watches every clip at every resolution, ``loops`` times, as a
camera node sends it (`evaluation.replay`). Nobody in the clips is enrolled, so every track named as the enrolled
person is a stranger named: ``strangers_named`` counts those tracks, ``stranger_tracks`` the tracks seen.

Mated (``--mated``): a person of the clip enrolled from one face of his first appearance (the largest face of a
first-loop track, as an operator's "Confirm" on it enrolls it) must be named on his later appearances, and nobody
else may be. The clip repeats, so on the frame he was enrolled from he is at the same box in every loop: a loop
counts as named when a track named as him is there; a track named as him that is elsewhere on that frame is
somebody else (``wrong``). Box overlap over whole tracks is not used: the tracker splits one walk into several
tracks, and tracks run across the loop's cut (checked by eye: such "other" tracks were the same boy).
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
@dataclass(frozen=True)
class Enrolled:
    """A person of the clip enrolled from one face: the clip frame and box it was taken from."""

    name: str
    source_index: int
    box: tuple[float, ...]
    sample: FaceSample


def same_person(first: dict[tuple[int, int], tuple[float, ...]],
                later: dict[tuple[int, int], tuple[float, ...]], near: int = 2) -> bool:
    """Whether a later track follows a first-loop track's boxes: on most of the later track's frames that have a
    first-loop frame at most ``near`` clip frames away (loops sample the clip at other phases), the boxes overlap
    at IoU >= MATCH_IOU (one walk may be split into several tracks: this finds those that overlap this one)."""
    by_index = {index: box for (_, index), box in first.items()}
    pairs = []
    for (_, index), box in later.items():
        nearest = min(by_index, key=lambda i: abs(i - index))
        if abs(nearest - index) <= near:
            pairs.append((by_index[nearest], box))
    return len(pairs) >= 2 and float(np.mean([_iou(a, b) >= MATCH_IOU for a, b in pairs])) > 0.5


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return float(iou_matrix(np.array([a], np.float32), np.array([b], np.float32))[0, 0])


def at_enrolment(person: Enrolled, boxes: dict[tuple[int, int], tuple[float, ...]], near: int = 2) -> list[float]:
    """IoU with the enrolment box of each of a track's boxes at most ``near`` clip frames from the enrolment frame
    (the clip repeats: there, in every loop, he is at that box)."""
    return [_iou(person.box, box) for (_, index), box in boxes.items() if abs(index - person.source_index) <= near]


def first_appearances(engine: Engine, camera: Camera, fps: float, people: int, min_px: float, tmp: Path,
                      min_frames: int = 8) -> list[Enrolled]:
    """One loop with nobody enrolled; ``people`` persons: from the first-loop tracks of at least ``min_frames``
    frames, largest face first (at least ``min_px`` tall), the face of that frame (detected, aligned, embedded),
    skipping a face that the vote threshold already takes for one chosen before (the same person twice)."""
    with new_store(engine, tmp / "first", []) as store:
        processor = TrackedProcessor(engine, store, engine.cfg)
        first = replay(processor, camera.name, camera_frames(camera.clip, camera.height, fps, 1), 1.0e9)
    largest = [max(boxes.items(), key=lambda kv: kv[1][3] - kv[1][1]) for boxes in first.boxes.values()
               if len(boxes) >= min_frames]
    out: list[Enrolled] = []
    for (_, index), box in sorted(largest, key=lambda kv: -(kv[1][3] - kv[1][1])):
        if len(out) == people or box[3] - box[1] < min_px:
            break
        sample = face_at(engine, camera.clip.received(index, camera.height), box, f"{camera.name}/frame:{index}")
        if sample is None or any(float(sample.embedding @ e.sample.embedding) >= engine.rule.threshold
                                 for e in out):
            continue
        out.append(Enrolled(f"{camera.name}-person-{len(out) + 1}", index, box, sample))
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


def mated_person(engine: Engine, camera: Camera, fps: float, loops: int, person: Enrolled, tmp: Path) -> dict:
    """``person`` enrolled alone; loops 1.. of the clip replayed. ``loops_named``: later loops in which a track
    named as him is at his enrolment box on his enrolment frame (IoU >= MATCH_IOU); ``wrong``: tracks named as him
    that are elsewhere on that frame (IoU < 0.1 with his box) while he is at his box: somebody else."""
    gallery = Gallery(person.name, person.sample.source, (person.sample,))
    with new_store(engine, tmp, [gallery]) as store:
        processor = TrackedProcessor(engine, store, engine.cfg)
        later = replay(processor, camera.name,
                       (f for f in camera_frames(camera.clip, camera.height, fps, loops) if f.loop > 0), 1.0e9)
    named = later.named(person.name)
    loops_named = {loop for t in named for (loop, index), box in later.boxes[t].items()
                   if abs(index - person.source_index) <= 2 and _iou(person.box, box) >= MATCH_IOU}
    wrong = [t for t in named if any(iou < 0.1 for iou in at_enrolment(person, later.boxes[t]))]
    return {"person": person.name, "enrolled_from": person.sample.source, "later_loops": loops - 1,
            "loops_named": len(loops_named), "tracks_named": len(named), "wrong": len(wrong)}


def mated_run(engine: Engine, camera: Camera, fps: float, loops: int, people: int, min_px: float,
              progress: Callable[[], None]) -> dict:
    """Each of ``people`` persons of the clip enrolled alone from one face of his first appearance (as an
    operator's "Confirm" enrols it); how often his later appearances are named, and whether anybody else is."""
    with tempfile.TemporaryDirectory(prefix="argusnet-mated-") as tmp_name:
        tmp = Path(tmp_name)
        chosen = first_appearances(engine, camera, fps, people, min_px, tmp)
        persons = []
        for n, person in enumerate(chosen):
            persons.append(mated_person(engine, camera, fps, loops, person, tmp / f"mated-{n}"))
            progress()
    return {"camera": camera.name, "persons": persons,
            **{key: sum(p[key] for p in persons) for key in ("later_loops", "loops_named", "tracks_named", "wrong")}}
