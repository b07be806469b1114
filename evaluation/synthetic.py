"""Synthetic tracking sequences made of real faces on real backgrounds, with MOT-format ground truth.

Faces: the identities of ``../shared/data/deepface/identities.csv`` (13 people, 61 photos). For each person the
first photo is kept for enrolment and the others become *sprites*: a square crop around the detected face,
blended in with a feathered elliptical mask. Backgrounds: real photos without human faces (``dlib/faces/dogs.jpg``
and scikit-image's photographs). A sequence moves several appearances across the frame on straight paths that
cross each other, under a moving pillar that occludes them for a few frames; people leave and some come back
later (a new appearance, another photo). Every third identity is never enrolled (a stranger: the right answer is
a visitor id, never a name).

Ground truth, per appearance (re-entries are new ground-truth tracks; the identity links them): MOT rows
``frame, id, x, y, w, h, 1, 1, visibility`` for frames where at least ``MIN_VISIBLE`` of the face box is visible.
The face box is the detector's box on the sprite's photo, scaled with the sprite; a face's *size* is that box's
height in the frame (upright faces' boxes are taller than wide, about 0.78 : 1).

Distant faces (``face_height``, `argusnet eval track --face-height H`): the same scenes (same people, photos and
timings) seen from further away in a ``FAR_FRAME`` (1280x720) frame. Each appearance's face is H px tall, spread
over 0.9-1.1 H (the base scene's 56-110 px mapped linearly, so the order of sizes is kept), and its path is the
base path scaled by the same factor about the base frame's centre: a face moves the same number of face heights
per second as in the base scenes (a person further away is smaller *and* slower on screen). The scaled scene sits
at a random place of the frame (so people may appear and leave inside the frame, as from behind a door); the
pillar shrinks with it. Frames then go through JPEG at quality ``FAR_JPEG_QUALITY`` (as `argusnet eval
small-faces`): compression is what hurts small faces most.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import simplejpeg

from gpu_worker.detect.base import Detector
from shared.images import ImageLimits, read_image

WIDTH, HEIGHT, FPS = 640, 480, 10.0
MIN_VISIBLE = 0.5
SPRITE_SCALE = 1.7  # sprite side / face box side
STRANGER_EVERY = 3  # identities whose index % 3 == 2 are never enrolled
BASE_SIZES = (56.0, 110.0)  # face heights of the base scenes (uniform)
PILLAR_WIDTH = 40.0  # the occluder's width in the base scenes
FAR_FRAME = (1280, 720)  # frame of the distant-face scenes
FAR_SPREAD = 0.1  # distant faces are (1 +- FAR_SPREAD) * face_height tall
FAR_JPEG_QUALITY = 75
MIN_FACE_HEIGHT, MAX_FACE_HEIGHT = 8.0, 400.0


@dataclass(frozen=True)
class Person:
    name: str
    enrolled: bool
    enrol_photo: Path
    sprite_photos: tuple[Path, ...]


@dataclass(frozen=True)
class Sprite:
    """An RGB face crop with its alpha (0..1) and the face box inside it, in sprite pixels at side 1.0."""

    image: np.ndarray
    alpha: np.ndarray
    face: tuple[float, float, float, float]  # x1, y1, x2, y2 as fractions of the sprite side


@dataclass(frozen=True)
class Appearance:
    """One pass of a person across the frame: from ``start`` to ``end`` (pixel centres) over frames
    [first, last], face box side ``size`` px."""

    gt_id: int
    person: Person
    photo: Path
    first: int
    last: int
    start: tuple[float, float]
    end: tuple[float, float]
    size: float


@dataclass(frozen=True)
class GroundTruthBox:
    frame: int  # 1-based, as in MOT files
    gt_id: int
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    visibility: float


@dataclass(frozen=True)
class Pillar:
    """The occluder: a full-height bar ``width`` px wide whose left edge moves from ``start`` to ``end`` (x, px)
    over the sequence."""

    start: float = -60.0
    end: float = WIDTH + 60.0
    width: float = PILLAR_WIDTH


@dataclass(frozen=True)
class Sequence:
    """A scene: ``frames`` frames of ``width`` x ``height`` px; ``jpeg_quality`` (when set) compresses every
    rendered frame as a camera would."""

    index: int
    frames: int
    background: np.ndarray
    appearances: tuple[Appearance, ...]
    fps: float = FPS
    width: int = WIDTH
    height: int = HEIGHT
    pillar: Pillar = Pillar()
    jpeg_quality: int | None = None


def people(data_dir: Path) -> list[Person]:
    csv_path = data_dir / "deepface" / "identities.csv"
    photos: dict[str, list[Path]] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            photos.setdefault(row["identity"], []).append(csv_path.parent / row["file"])
    out = []
    for i, (name, files) in enumerate(sorted(photos.items())):
        if len(files) >= 2:
            out.append(Person(name, i % STRANGER_EVERY != 2, files[0], tuple(files[1:])))
    return out


def backgrounds(data_dir: Path, frame: tuple[int, int] = (WIDTH, HEIGHT)) -> list[np.ndarray]:
    """The background photos resized to ``frame`` (width, height)."""
    from skimage import data as skdata

    images = [read_image(data_dir / "dlib" / "faces" / "dogs.jpg", ImageLimits())]
    images += [skdata.coffee(), skdata.rocket(), skdata.chelsea(), skdata.immunohistochemistry()]
    return [cv2.resize(np.ascontiguousarray(im[..., :3]), frame, interpolation=cv2.INTER_AREA) for im in images]


class SpriteCache:
    """Face sprites cut from photos by the real detector, computed once per photo."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    @functools.lru_cache(maxsize=256)
    def get(self, photo: Path) -> Sprite:
        image = read_image(photo, ImageLimits())
        faces = self.detector.detect([image])[0]
        if len(faces) == 0:
            raise ValueError(f"{photo}: no face found for a sprite")
        x1, y1, x2, y2 = faces.largest().boxes[0]
        side = SPRITE_SCALE * max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        sx, sy = cx - side / 2, cy - side / 2 - 0.05 * side
        matrix = np.float32([[1, 0, -sx], [0, 1, -sy]])
        n = int(round(side))
        crop = cv2.warpAffine(image, matrix, (n, n), borderMode=cv2.BORDER_REFLECT)
        alpha = np.zeros((n, n), np.float32)
        cv2.ellipse(alpha, (n // 2, n // 2), (int(n * 0.42), int(n * 0.48)), 0, 0, 360, 1.0, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), n * 0.04)
        face = ((x1 - sx) / side, (y1 - sy) / side, (x2 - sx) / side, (y2 - sy) / side)
        return Sprite(crop, alpha, tuple(float(v) for v in face))


def _edge_point(rng: np.random.Generator, side: int, margin: float) -> tuple[float, float]:
    """A point just outside the frame on edge ``side`` (0 left, 1 right, 2 top, 3 bottom)."""
    if side < 2:
        return (-margin if side == 0 else WIDTH + margin, rng.uniform(0.25, 0.75) * HEIGHT)
    return (rng.uniform(0.2, 0.8) * WIDTH, -margin if side == 2 else HEIGHT + margin)


def make_sequence(index: int, persons: list[Person], bgs: list[np.ndarray], frames: int = 120,
                  seed: int = 0, fps: float = FPS, face_height: float | None = None) -> Sequence:
    """3-4 appearances crossing the frame (paths through the centre region) and one re-entry. ``frames`` and the
    timings are at the base rate FPS; another ``fps`` renders the same scene (same people, paths and timing in
    seconds) with proportionally more or fewer frames. ``face_height`` (px): the same scene seen from further
    away (`far_view`); ``bgs`` must then be ``backgrounds(data_dir, FAR_FRAME)``."""
    rng = np.random.default_rng(seed * 1000 + index)
    scale = fps / FPS
    total = round(frames * scale)
    chosen = rng.choice(len(persons), size=int(rng.integers(3, 5)), replace=False)
    apps: list[Appearance] = []
    for k, p in enumerate(chosen):
        person = persons[int(p)]
        first = round(int(rng.integers(0, frames // 4)) * scale)
        apps.append(_appearance(rng, k + 1, person, first=first, frames=total, scale=scale))
    back = persons[int(chosen[0])]
    reentry_first = apps[0].last + round(int(rng.integers(8, 20)) * scale)
    if reentry_first < total - round(30 * scale):
        apps.append(_appearance(rng, len(apps) + 1, back, first=reentry_first, frames=total, scale=scale))
    seq = Sequence(index, total, bgs[index % len(bgs)], tuple(apps), fps)
    return seq if face_height is None else far_view(seq, face_height, rng)


def far_view(seq: Sequence, face_height: float, rng: np.random.Generator) -> Sequence:
    """``seq`` (a base scene) seen from further away in a FAR_FRAME frame: faces (1 +- FAR_SPREAD) * face_height
    tall, each path scaled by its face's factor about the base frame's centre, the scene at a random place of the
    frame (inside it where it fits), the pillar scaled by face_height over the base scenes' mean face height, and
    JPEG at FAR_JPEG_QUALITY. The background must already be FAR_FRAME sized."""
    if not MIN_FACE_HEIGHT <= face_height <= MAX_FACE_HEIGHT:
        raise ValueError(f"face height must be in {MIN_FACE_HEIGHT:g}..{MAX_FACE_HEIGHT:g} px, got {face_height}")
    width, height = FAR_FRAME
    if seq.background.shape[:2] != (height, width):
        raise ValueError(f"a distant-face scene needs a {width}x{height} background (backgrounds(data_dir, FAR_FRAME)),"
                         f" got {seq.background.shape[1]}x{seq.background.shape[0]}")
    lo, hi = BASE_SIZES
    cx, cy = WIDTH / 2, HEIGHT / 2
    factors = [face_height * (1 - FAR_SPREAD + 2 * FAR_SPREAD * (a.size - lo) / (hi - lo)) / a.size
               for a in seq.appearances]
    reach_x = max(k * (max(abs(a.start[0] - cx), abs(a.end[0] - cx)) + 0.6 * a.size)
                  for a, k in zip(seq.appearances, factors))
    reach_y = max(k * (max(abs(a.start[1] - cy), abs(a.end[1] - cy)) + 0.6 * a.size)
                  for a, k in zip(seq.appearances, factors))
    ax = float(rng.uniform(reach_x, width - reach_x)) if reach_x < width / 2 else width / 2
    ay = float(rng.uniform(reach_y, height - reach_y)) if reach_y < height / 2 else height / 2

    def place(point: tuple[float, float], k: float) -> tuple[float, float]:
        return (ax + k * (point[0] - cx), ay + k * (point[1] - cy))
    apps = tuple(replace(a, start=place(a.start, k), end=place(a.end, k), size=a.size * k)
                 for a, k in zip(seq.appearances, factors))
    k0 = face_height / (sum(BASE_SIZES) / 2)
    pillar = Pillar(ax + k0 * (seq.pillar.start - cx), ax + k0 * (seq.pillar.end - cx), max(2.0, k0 * seq.pillar.width))
    return replace(seq, appearances=apps, width=width, height=height, pillar=pillar, jpeg_quality=FAR_JPEG_QUALITY)


def _appearance(rng: np.random.Generator, gt_id: int, person: Person, first: int, frames: int,
                scale: float = 1.0) -> Appearance:
    size = float(rng.uniform(*BASE_SIZES))
    side = int(rng.integers(0, 4))
    opposite = {0: 1, 1: 0, 2: 3, 3: 2}[side]
    margin = size
    duration = round(int(rng.integers(40, 70)) * scale)
    photo = person.sprite_photos[int(rng.integers(0, len(person.sprite_photos)))]
    return Appearance(gt_id, person, photo, first, min(frames - 1, first + duration),
                      _edge_point(rng, side, margin), _edge_point(rng, opposite, margin), size)


def _position(app: Appearance, frame: int) -> tuple[float, float]:
    t = (frame - app.first) / max(1, app.last - app.first)
    return (app.start[0] + t * (app.end[0] - app.start[0]), app.start[1] + t * (app.end[1] - app.start[1]))


def _pillar_x(pillar: Pillar, frame: int, frames: int) -> float:
    """The pillar's left edge in this frame: it sweeps left to right once per sequence."""
    return pillar.start + (pillar.end - pillar.start) * frame / frames


def render(seq: Sequence, sprites: SpriteCache) -> Iterator[tuple[np.ndarray, list[GroundTruthBox]]]:
    """(RGB frame, its ground truth) for every frame of ``seq``."""
    for frame in range(seq.frames):
        canvas = seq.background.astype(np.float32).copy()
        placed = []
        live = [a for a in seq.appearances if a.first <= frame <= a.last]
        for app in sorted(live, key=lambda a: a.size):  # bigger (closer) faces drawn last, in front
            placed.append((app, _paste(canvas, sprites.get(app.photo), app, _position(app, frame))))
        px = int(_pillar_x(seq.pillar, frame, seq.frames))
        x0, x1 = max(0, px), min(seq.width, px + int(round(seq.pillar.width)))
        if x1 > x0:
            canvas[:, x0:x1] = 55.0
        truth = _visible_boxes(frame, placed, (x0, x1), (seq.width, seq.height))
        image = np.clip(canvas, 0, 255).astype(np.uint8)
        if seq.jpeg_quality is not None:
            image = simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(image, quality=seq.jpeg_quality, colorspace="RGB"),
                                           colorspace="RGB")
        yield image, truth


def _paste(canvas: np.ndarray, sprite: Sprite, app: Appearance, centre: tuple[float, float]) -> tuple:
    """Blend the sprite in so that its face box is ``app.size`` px tall, centred on ``centre``; the face box."""
    fx1, fy1, fx2, fy2 = sprite.face
    side = app.size / (fy2 - fy1)
    n = max(8, int(round(side)))
    image = cv2.resize(sprite.image, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(sprite.alpha, (n, n), interpolation=cv2.INTER_LINEAR)[..., None]
    face_cx, face_cy = (fx1 + fx2) / 2 * n, (fy1 + fy2) / 2 * n
    ox, oy = int(round(centre[0] - face_cx)), int(round(centre[1] - face_cy))
    height, width = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(width, ox + n), min(height, oy + n)
    if x1 > x0 and y1 > y0:
        a = alpha[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        region = canvas[y0:y1, x0:x1]
        region[...] = region * (1 - a) + image[y0 - oy:y1 - oy, x0 - ox:x1 - ox] * a
    return (ox + fx1 * n, oy + fy1 * n, ox + fx2 * n, oy + fy2 * n)


def _visible_boxes(frame: int, placed: list, pillar: tuple[int, int], size: tuple[int, int]) -> list[GroundTruthBox]:
    """Face boxes with their visible fraction: inside the frame, not under a later face or the pillar."""
    width, height = size
    out = []
    for i, (app, box) in enumerate(placed):
        x1, y1, x2, y2 = box
        area = max(1e-6, (x2 - x1) * (y2 - y1))
        cx1, cy1, cx2, cy2 = int(max(0, x1)), int(max(0, y1)), int(min(width, x2)), int(min(height, y2))
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        mask = np.ones((cy2 - cy1, cx2 - cx1), bool)  # the box's part inside the frame
        for _, later in placed[i + 1:]:
            lx1, ly1, lx2, ly2 = (int(max(0, v)) for v in later)
            mask[max(0, ly1 - cy1):max(0, ly2 - cy1), max(0, lx1 - cx1):max(0, lx2 - cx1)] = False
        mask[:, max(0, pillar[0] - cx1):max(0, pillar[1] - cx1)] = False
        visible = float(mask.sum()) / area
        if visible >= MIN_VISIBLE:
            out.append(GroundTruthBox(frame + 1, app.gt_id, (x1, y1, x2, y2), round(min(1.0, visible), 3)))
    return out


def write_mot(path: Path, truth: list[GroundTruthBox]) -> None:
    """MOT Challenge gt.txt: frame, id, left, top, width, height, conf, class, visibility."""
    with open(path, "w") as f:
        for t in truth:
            x1, y1, x2, y2 = t.box
            f.write(f"{t.frame},{t.gt_id},{x1:.1f},{y1:.1f},{x2 - x1:.1f},{y2 - y1:.1f},1,1,{t.visibility}\n")
