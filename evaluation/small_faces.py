"""`argusnet eval small-faces`: verification when faces are small in a camera frame.

For every photo of a pairs file, the face box is found by the detector on the original photo; then, for each
height H, the photo is scaled so that the face is H px tall, pasted with the face at the centre of a grey frame of
the given size (1280x720 by default), JPEG-encoded at quality 75 and decoded, and the pipeline (detector at its
configured resolution, alignment, embedder) runs on that frame. Per height: how many photos still have a face
found, verification over the pairs (a pair with a missed face scores -1: a reject), and open-set identification
as a camera would do it: the identities are the groups of photos the "same" pairs join; each degraded face is
named by the configured open-set rule for one face (`identity.decision.decide_name`: name_threshold and margin)
against a gallery of every OTHER original photo (enrolment photos are full size); ``wrong_names`` counts faces
given another identity's name, ``named`` the right name, ``abstained`` no name (allowed: the rule may abstain,
never name wrongly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg
from tqdm import tqdm

from evaluation.verify import FARS, Pair, best_threshold, read_pairs, tar_at_far
from gpu_worker.engine import Engine
from identity.decision import DecisionRule, decide_name
from shared.errors import ArgusError, InputError
from shared.images import read_image

GREY = 128
JPEG_QUALITY = 75
MIN_HEIGHT, MAX_HEIGHT = 8, 1024


def parse_heights(text: str) -> list[int]:
    try:
        heights = sorted({int(h) for h in text.split(",") if h.strip()})
    except ValueError:
        raise InputError(f"--heights: expected comma-separated integers, got {text!r}") from None
    if not heights or heights[0] < MIN_HEIGHT or heights[-1] > MAX_HEIGHT:
        raise InputError(f"--heights: expected values in {MIN_HEIGHT}..{MAX_HEIGHT}, got {text!r}")
    return heights


def parse_frame(text: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or not (64 <= int(w) <= 8192 and 64 <= int(h) <= 8192):
        raise InputError(f"--frame: expected WIDTHxHEIGHT (e.g. 1280x720), got {text!r}")
    return int(w), int(h)


def degrade(image: np.ndarray, box: np.ndarray, height: int, frame: tuple[int, int]) -> np.ndarray:
    """``image`` scaled so the face ``box`` is ``height`` px tall, its centre at the frame's centre, on grey, and
    through a JPEG at quality 75."""
    scale = height / max(1.0, float(box[3] - box[1]))
    small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    width, frame_h = frame
    canvas = np.full((frame_h, width, 3), GREY, np.uint8)
    cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
    ox, oy = int(round(width / 2 - cx)), int(round(frame_h / 2 - cy))
    x0, y0 = max(0, ox), max(0, oy)
    x1, y1 = min(width, ox + small.shape[1]), min(frame_h, oy + small.shape[0])
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = small[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    jpeg = simplejpeg.encode_jpeg(canvas, quality=JPEG_QUALITY, colorspace="RGB")
    return simplejpeg.decode_jpeg(jpeg, colorspace="RGB")


def _embed_at(engine: Engine, image: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """The largest face's embedding and its detected height, or (None, None); detected as a photo (up to
    ``detector.photo_max_side``)."""
    faces = engine.detect(image).largest()
    if len(faces) == 0:
        return None, None
    return engine.observe(image, faces)[0].embedding, float(faces.boxes[0][3] - faces.boxes[0][1])


def embed_degraded(engine: Engine, paths: list[Path], heights: list[int], frame: tuple[int, int]
                   ) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, np.ndarray], dict[str, str]]:
    """Per height, the embedding of each photo's face in the degraded frame; each original photo's embedding; and
    the photos with no face at all in the original (left out of every height)."""
    vectors: dict[int, dict[str, np.ndarray]] = {h: {} for h in heights}
    originals: dict[str, np.ndarray] = {}
    unusable: dict[str, str] = {}
    for path in tqdm(paths, desc="small-faces", unit="photo", disable=None, leave=False):
        try:
            image = read_image(path, engine.cfg.images)
        except ArgusError as exc:
            unusable[str(path)] = str(exc)
            continue
        faces = engine.detect(image, pad_retry=True).largest()
        if len(faces) == 0:
            unusable[str(path)] = "no face found in the original photo"
            continue
        originals[str(path)] = engine.observe(image, faces)[0].embedding
        for height in heights:
            embedding, _found = _embed_at(engine, degrade(image, faces.boxes[0], height, frame))
            if embedding is not None:
                vectors[height][str(path)] = embedding
    return vectors, originals, unusable


def identities(pairs: list[Pair]) -> dict[str, str]:
    """Photo -> identity: the groups the "same" pairs join (union-find), named by their first photo."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    for p in pairs:
        a, b = root(str(p.a)), root(str(p.b))
        if p.same and a != b:
            parent[max(a, b)] = min(a, b)
    return {photo: root(photo) for photo in list(parent)}


@dataclass(frozen=True)
class _Hit:
    name: str
    similarity: float


def identify(probes: dict[str, np.ndarray], originals: dict[str, np.ndarray], who: dict[str, str],
             rule: DecisionRule) -> dict:
    """Each probe named against every other original photo, best photo per identity, by the open-set rule."""
    counts = {"named": 0, "wrong_names": 0, "abstained": 0}
    for photo, probe in probes.items():
        best: dict[str, float] = {}
        for other, vector in originals.items():
            if other != photo:
                identity = who[other]
                best[identity] = max(best.get(identity, -1.0), float(probe @ vector))
        hits = sorted((_Hit(n, s) for n, s in best.items()), key=lambda h: -h.similarity)
        name = decide_name(hits, rule).name
        key = "abstained" if name is None else ("named" if name == who[photo] else "wrong_names")
        counts[key] += 1
    return counts


def _verify(pairs, vectors: dict[str, np.ndarray]) -> dict:
    scores = np.array([float(vectors[str(p.a)] @ vectors[str(p.b)]) if str(p.a) in vectors and str(p.b) in vectors
                       else -1.0 for p in pairs])
    labels = np.array([p.same for p in pairs], dtype=bool)
    _cut, accuracy = best_threshold(scores, labels)
    return {"accuracy": round(accuracy, 4), "tar_at_far": {far: round(tar_at_far(scores, labels, float(far)), 4)
                                                           for far in FARS}}


def run_small_faces(engine: Engine, pairs_csv: Path, images_dir: Path | None, heights: list[int],
                    frame: tuple[int, int]) -> dict:
    pairs = read_pairs(pairs_csv, images_dir or pairs_csv.parent)
    paths = sorted({p.a for p in pairs} | {p.b for p in pairs}, key=str)
    vectors, originals, unusable = embed_degraded(engine, paths, heights, frame)
    pairs = [p for p in pairs if str(p.a) not in unusable and str(p.b) not in unusable]
    if not pairs:
        raise InputError(f"{pairs_csv}: no pair whose photos both show a face")
    photos = len(paths) - len(unusable)
    who = identities(pairs)
    out = {}
    for height in heights:
        row = {"detected": len(vectors[height]), "photos": photos,
               "detected_rate": round(len(vectors[height]) / photos, 4), "pairs": len(pairs)}
        row.update(_verify(pairs, vectors[height]))
        row.update(identify(vectors[height], originals, who, engine.rule))
        out[str(height)] = row
    return {"heights": out, "frame": f"{frame[0]}x{frame[1]}", "jpeg_quality": JPEG_QUALITY,
            "detector": {"name": engine.detector.name, "max_side": engine.cfg.detector.max_side,
                         "photo_max_side": engine.cfg.detector.photo_max_side},
            "model": engine.embedder.name, "threshold": engine.rule.threshold,
            "name_threshold": engine.rule.naming.threshold, "margin": engine.rule.margin,
            "identities": len(set(who.values())), "unusable_photos": unusable}
