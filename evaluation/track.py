"""`argusnet eval track`: the tracked pipeline on synthetic sequences (evaluation.synthetic), scored
with TrackEval's HOTA, CLEAR (MOTA, ID switches) and Identity (IDF1) metrics, plus naming correctness.

The enrolled identities are enrolled from photos no sequence shows; strangers are never enrolled. A predicted
track is matched to the ground-truth appearance it overlaps (IoU >= 0.5) in most frames; ``wrong_names`` counts
predicted tracks ever named (track_identified, not a visitor) as an enrolled person other than their own.

Naming per ground-truth appearance (re-entries count apart): ``gt_tracks_found`` appearances some predicted track
belongs to; ``named_recall`` the fraction of the enrolled persons' appearances a track of which was given their
right name; ``enrolled_as_visitor`` enrolled persons' appearances whose tracks got only a visitor id;
``visitor_ids`` the visitor ids handed out (the visitor gallery lives through all sequences) and
``shared_visitor_ids`` those given to appearances of more than one person (a wrong visitor identity: strangers
merged); ``time_to_name_gt_ms_p50`` from an appearance's first visible frame to its right name (detection delay
included; ``time_to_name_ms_p50`` counts from the track's start). ``face_height`` (`--face-height H`): the scenes
seen from further away, faces about H px tall (detector-box height) in a 1280x720 frame
(evaluation.synthetic.far_view).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.synthetic import (
    FAR_FRAME,
    FPS,
    HEIGHT,
    WIDTH,
    GroundTruthBox,
    SpriteCache,
    backgrounds,
    make_sequence,
    people,
    render,
    write_mot,
)
from gpu_worker.engine import Engine
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackBox, TrackedProcessor
from shared.errors import FaceQualityError
from shared.images import read_image
from shared.protocol import TrackEvent
from shared.types import iou_matrix
from store import open_store
from store.base import Store
from store.config import LocalStoreConfig

log = logging.getLogger(__name__)
MATCH_IOU = 0.5


class _NullTimer:
    def observe(self, stage: str, seconds: float) -> None:
        pass


@dataclass
class SequenceRun:
    """What one sequence produced: predicted boxes per frame, events, and the ground truth."""

    truth: list[list[GroundTruthBox]] = field(default_factory=list)
    predicted: list[list[TrackBox]] = field(default_factory=list)
    events: list[TrackEvent] = field(default_factory=list)
    start: float = 0.0  # capture time of frame 0 (frame i is captured at start + i / fps)


def enrol(engine: Engine, directory: Path, persons) -> Store:
    """A new local store in ``directory`` with every enrolled person of the sequences (the caller closes it)."""
    store = open_store(LocalStoreConfig(path=directory), engine.cfg.gallery, engine.embedder.name,
                       engine.embedder.dim, create=True)
    for person in persons:
        if not person.enrolled:
            continue
        try:
            face = engine.enrolment_face(read_image(person.enrol_photo, engine.cfg.images), str(person.enrol_photo))
        except FaceQualityError as exc:
            raise ValueError(f"enrolment photo of {person.name} refused: {exc}") from exc
        store.persons.add_person(person.name, [face.sample()])
    return store


def run_sequence(processor: TrackedProcessor, seq, sprites: SpriteCache, camera: str) -> SequenceRun:
    run = SequenceRun()
    processor.on_tracks = lambda item, boxes: run.predicted.append(boxes)
    start = run.start = time.time()
    for index, (image, truth) in enumerate(render(seq, sprites)):
        run.truth.append(truth)
        before = len(run.predicted)
        item = DecodedFrame(camera, index, start + index / seq.fps, image, time.time())
        run.events += processor.process([item], _NullTimer())
        if len(run.predicted) == before:
            run.predicted.append([])
    return run


def trackeval_data(run: SequenceRun) -> dict:
    """The per-sequence dict TrackEval's metrics take: contiguous 0-based ids and IoU similarity per frame."""
    gt_index = {g: i for i, g in enumerate(sorted({t.gt_id for frame in run.truth for t in frame}))}
    tr_index = {p: i for i, p in enumerate(sorted({b.track for frame in run.predicted for b in frame}))}
    gt_ids, tr_ids, sims = [], [], []
    for truth, pred in zip(run.truth, run.predicted):
        g = np.array([gt_index[t.gt_id] for t in truth], int)
        p = np.array([tr_index[b.track] for b in pred], int)
        gboxes = np.array([t.box for t in truth], np.float32).reshape(-1, 4)
        pboxes = np.array([b.box for b in pred], np.float32).reshape(-1, 4)
        gt_ids.append(g)
        tr_ids.append(p)
        sims.append(iou_matrix(gboxes, pboxes) if len(g) and len(p) else np.zeros((len(g), len(p))))
    return {"num_timesteps": len(run.truth), "num_gt_ids": len(gt_index), "num_tracker_ids": len(tr_index),
            "num_gt_dets": int(sum(len(g) for g in gt_ids)), "num_tracker_dets": int(sum(len(p) for p in tr_ids)),
            "gt_ids": gt_ids, "tracker_ids": tr_ids, "similarity_scores": sims}


def track_owner(run: SequenceRun) -> dict[int, int]:
    """predicted track -> the ground-truth appearance it overlaps most often."""
    votes: dict[int, Counter] = defaultdict(Counter)
    for truth, pred in zip(run.truth, run.predicted):
        if not truth or not pred:
            continue
        iou = iou_matrix(np.array([t.box for t in truth], np.float32), np.array([b.box for b in pred], np.float32))
        for j, b in enumerate(pred):
            i = int(np.argmax(iou[:, j]))
            if iou[i, j] >= MATCH_IOU:
                votes[b.track][truth[i].gt_id] += 1
    return {track: c.most_common(1)[0][0] for track, c in votes.items()}


def wrong_names(run: SequenceRun, seq, enrolled: set[str]) -> int:
    owner = track_owner(run)
    identity = {a.gt_id: a.person.name for a in seq.appearances}
    named: dict[int, set[str]] = defaultdict(set)
    for e in run.events:
        if e.type == "track_identified" and not e.visitor and e.name in enrolled:
            named[e.track].add(e.name)
    return sum(1 for track, names in named.items() if any(n != identity.get(owner.get(track)) for n in names))


@dataclass(frozen=True)
class Naming:
    """How the enrolled persons' ground-truth appearances of one sequence were named (see the module docstring)."""

    found: int  # appearances (enrolled or not) some predicted track belongs to
    enrolled: int  # appearances of enrolled persons
    named: int  # ... given their right name by one of their tracks
    as_visitor: int  # ... whose tracks got only visitor ids
    delays_ms: list[float]  # first visible frame -> right name, per named appearance
    visitors: dict[str, set[str]]  # visitor id -> the persons whose appearances were given it


def naming(run: SequenceRun, seq, enrolled: set[str]) -> Naming:
    owner = track_owner(run)
    first_seen: dict[int, int] = {}
    for frame in run.truth:
        for t in frame:
            first_seen.setdefault(t.gt_id, t.frame - 1)
    right: dict[int, float] = {}  # gt id -> capture time of its first right name
    visitor: set[int] = set()
    visitors: dict[str, set[str]] = defaultdict(set)
    names = {a.gt_id: a.person.name for a in seq.appearances}
    for e in run.events:
        gt = owner.get(e.track)
        if e.type != "track_identified" or gt is None:
            continue
        if e.visitor:
            visitor.add(gt)
            visitors[e.name].add(names[gt])
        elif e.name == names[gt]:
            right.setdefault(gt, e.capture_ts)
    targets = [a.gt_id for a in seq.appearances if a.person.name in enrolled and a.gt_id in first_seen]
    delays = [max(0.0, (right[g] - run.start - first_seen[g] / seq.fps) * 1000.0) for g in targets if g in right]
    return Naming(found=len(set(owner.values())), enrolled=len(targets), named=sum(g in right for g in targets),
                  as_visitor=sum(g in visitor and g not in right for g in targets), delays_ms=delays,
                  visitors=dict(visitors))


def score(runs: list[SequenceRun]) -> dict:
    from trackeval.metrics import CLEAR, HOTA, Identity

    results = {}
    quiet = {"PRINT_CONFIG": False}
    for metric in (HOTA(quiet), CLEAR({**quiet, "THRESHOLD": MATCH_IOU}), Identity({**quiet, "THRESHOLD": MATCH_IOU})):
        per_seq = {str(i): metric.eval_sequence(trackeval_data(r)) for i, r in enumerate(runs)}
        results[metric.get_name()] = metric.combine_sequences(per_seq)
    return {"hota": float(np.mean(results["HOTA"]["HOTA"])), "mota": float(results["CLEAR"]["MOTA"]),
            "idf1": float(results["Identity"]["IDF1"]), "id_switches": int(results["CLEAR"]["IDSW"]),
            "false_positives": int(results["CLEAR"]["CLR_FP"]), "misses": int(results["CLEAR"]["CLR_FN"]),
            "mostly_tracked": int(results["CLEAR"]["MT"]), "fragmentations": int(results["CLEAR"]["Frag"])}


def evaluate_tracking(engine: Engine, data_dir: Path, sequences: int, seed: int = 0,
                      out_dir: Path | None = None, fps: float = FPS, face_height: float | None = None) -> dict:
    """Run ``sequences`` synthetic sequences through a TrackedProcessor with the engine's configuration and score
    them; ``face_height`` (px) renders the distant-face version of the same scenes (evaluation.synthetic)."""
    persons = people(data_dir)
    frame = (WIDTH, HEIGHT) if face_height is None else FAR_FRAME
    bgs = backgrounds(data_dir, frame)
    sprites = SpriteCache(engine.detector)
    enrolled = {p.name for p in persons if p.enrolled}
    runs, seqs = [], []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="argusnet-evaltrack-") as tmp:
        store = enrol(engine, Path(tmp) / "gallery", persons)
        processor = TrackedProcessor(engine, store, engine.cfg)
        for i in tqdm(range(sequences), desc="eval track", unit="seq", disable=None, leave=False):
            seq = make_sequence(i, persons, bgs, seed=seed, fps=fps, face_height=face_height)
            runs.append(run_sequence(processor, seq, sprites, camera=f"seq{i}"))
            seqs.append(seq)
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
                write_mot(out_dir / f"seq{i}-gt.txt", [t for frame in runs[-1].truth for t in frame])
        embeddings, faces_seen = processor.embeddings, processor.faces_seen
        store.close()
    tracks = {(i, b.track) for i, r in enumerate(runs) for frame in r.predicted for b in frame}
    named_ms = [e.time_to_name_ms for r in runs for e in r.events
                if e.type == "track_identified" and e.time_to_name_ms is not None]
    metrics = score(runs)
    return {**{k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()},
            "sequences": sequences, "fps": fps, "frames": sum(len(r.truth) for r in runs),
            "gt_tracks": sum(len(s.appearances) for s in seqs), "tracks": len(tracks),
            "wrong_names": sum(wrong_names(r, s, enrolled) for r, s in zip(runs, seqs)),
            "faces_seen": faces_seen, "embeddings": embeddings,
            "embeddings_per_track": round(embeddings / max(1, len(tracks)), 2),
            "time_to_name_ms_p50": None if not named_ms else round(float(np.median(named_ms)), 1),
            **_naming_summary([naming(r, s, enrolled) for r, s in zip(runs, seqs)]),
            "face_height": face_height, "frame": f"{frame[0]}x{frame[1]}",
            "detector_max_side": engine.cfg.detector.max_side,
            "min_face_px": engine.cfg.tracking.scheduler.min_face_px,
            "enrolled": sorted(enrolled), "strangers": sorted(p.name for p in persons if not p.enrolled),
            "seconds": round(time.perf_counter() - started, 1), "model": engine.embedder.name}


def _naming_summary(per_seq: list[Naming]) -> dict:
    enrolled = sum(n.enrolled for n in per_seq)
    named = sum(n.named for n in per_seq)
    delays = [d for n in per_seq for d in n.delays_ms]
    visitors: dict[str, set[str]] = defaultdict(set)
    for n in per_seq:
        for visitor, persons in n.visitors.items():
            visitors[visitor] |= persons
    return {"gt_tracks_found": sum(n.found for n in per_seq), "gt_tracks_enrolled": enrolled,
            "gt_tracks_named": named, "named_recall": round(named / enrolled, 4) if enrolled else None,
            "enrolled_as_visitor": sum(n.as_visitor for n in per_seq), "visitor_ids": len(visitors),
            "shared_visitor_ids": sum(1 for persons in visitors.values() if len(persons) > 1),
            "time_to_name_gt_ms_p50": None if not delays else round(float(np.median(delays)), 1),
            "time_to_name_gt_ms_p90": None if not delays else round(float(np.percentile(delays, 90)), 1)}
