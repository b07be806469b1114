"""Distant faces in streams: how the tracked pipeline finds faces too small for the usual detection pass (about
40 px tall in a 720p frame, 20 px at ``detector.max_side`` 640) at a bounded cost (`tracking.distant`).

Fine passes: at most every ``fine_every_s`` seconds one of a camera's detected frames is detected at up to
``max_side`` (960: 30 px for those faces) *instead of* at ``detector.max_side``: one pass that sees the large faces
as well as the small ones. A large "face" that only this pass sees (RetinaFace at high resolution sees dogs' faces)
starts no track: a track needs ``min_hits`` detected frames, and the usual pass on the next frame does not see it.

Regions: each small face of a detected frame (smaller than REGION_MAX_PX at the usual pass's scale, where that pass
misses most of them; found by any pass), and each small track that frame lost, is detected again on the camera's
next detected frame in a square crop around it at ``region_scale`` (REGION_FACTOR times its height, 64 px up
to ``region_px``), at most ``regions`` a frame, smallest first. So a distant face found by a fine pass is confirmed
on the next frame and followed between fine passes, and a face the usual pass sees only now and then is held.

Cost: each detected frame saves ``budget`` usual passes; regions and fine passes spend it, at what they were
measured to cost on this camera's frames (seconds over a usual pass's, moving averages; before any measurement,
from the detector's input pixels), and a fine pass waits until enough is saved. Regions are planned whatever is
saved (a region whose face the frame's usual pass found is not detected, and costs nothing): at most ``regions`` a
frame of at most ``region_px`` each, about 0.07 of a usual pass each at 96 px; what they spend beyond the budget only
delays fine passes. So the two add at most ``budget`` to the camera's detection work, whatever the host, unless
the regions alone cost more; a new distant face is reported within about ``fine_every_s`` (more where many small
faces hold regions) plus one detected frame. And they use spare capacity only: a worker that falls behind
(frames wait to be taken up) shrinks both, down to none (`gpu_worker.spare`, ``yield_after_ms``).

The plan (which frame gets which pass, which regions) is made on the worker's processing thread from the camera's
state; the detection itself (`StreamDetection.detect`) only reads the plans, and runs on the worker's detection
pool (`gpu_worker.inflight`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from gpu_worker.distant_config import DistantFacesConfig
from gpu_worker.engine import Engine, concat, small_extra
from gpu_worker.processing import DecodedFrame, StageTimer
from gpu_worker.spare import SpareCapacity
from shared.types import Detections, iou_matrix

REGION_MAX_PX = 28  # faces smaller than this at the usual pass's scale get regions (it sees 8 of 25 at 20 px)
REGION_MIN_PX = 64  # the smallest region crop, at the regions' scale
REGION_FACTOR = 1.75  # a region crop's side over its face's height (then rounded up to 32)
REGION_KEEP_IOU = 0.3  # faces (or boxes) overlapping this much are one
REGION_OVERHEAD = 0.03  # a region's expected fixed cost (one more image for the detector), in usual passes, until
# it is measured (a 64 px crop costs about 0.05 of a 640x360 pass, a 96 px one 0.08, in a batch of two)
TOLERANCE_S = 1e-3  # timestamps jitter: a fine pass due this much early is done now
EMA = 0.2  # weight of the latest timing in the moving averages of pass costs


@dataclass(frozen=True)
class FramePlan:
    """What the detector does with one frame: nothing (its tracks coast), the usual pass, or the fine pass; with
    the usual pass, crops (x1, y1, x2, y2 in frame pixels) around the small faces of the camera's latest detected
    frame, to be detected at ``region_scale``."""

    frame: DecodedFrame
    detect: bool = True
    fine: bool = False
    regions: tuple[tuple[int, int, int, int], ...] = ()
    targets: tuple[tuple[float, float, float, float], ...] = ()  # per region, the face it is for (frame pixels)
    expected: float = 0.0  # what its fine pass or regions were expected to cost, in usual passes (spent at plan)


@dataclass(frozen=True)
class Found:
    """A detected frame's faces, the boxes of those to look for again in regions on the next one (the smallest
    first: the usual pass is the least likely to see them), and the seconds its passes took (its share of each
    detector call)."""

    faces: Detections
    keep: np.ndarray  # (K, 4) float32
    base_s: float = 0.0
    fine_s: float = 0.0
    region_s: float = 0.0


@dataclass
class DistantState:
    """Per camera: when its last fine pass was, and the small faces to look for again."""

    last_fine_ts: float | None = None
    small: np.ndarray | None = None  # (K, 4) boxes in frame pixels, from the latest detected frame
    seen_ts: float = float("-inf")  # capture time of the latest detected frame finished
    credit: float | None = None  # budget saved for fine passes, in usual passes (None: no frame yet)
    base_s: float | None = None  # a usual pass of this camera's frames, seconds (moving average)
    fine_cost: float | None = None  # what a fine pass adds to a usual one, in usual passes (moving average)

    def found(self, plan: FramePlan, found: Found) -> None:
        """A detected frame was finished: its small faces are looked for again on the next one, and what its fine
        pass or regions really cost replaces what its plan expected."""
        self.small, self.seen_ts = found.keep, max(self.seen_ts, plan.frame.capture_ts)
        if found.base_s > 0.0:
            self.base_s = found.base_s if self.base_s is None else (1 - EMA) * self.base_s + EMA * found.base_s
        if not self.base_s or not (plan.fine or plan.regions):
            return  # no usual pass timed yet: what the plan expected stands
        actual = found.region_s / self.base_s
        if plan.fine:
            actual += found.fine_s / self.base_s - 1.0
            self.fine_cost = actual if self.fine_cost is None else (1 - EMA) * self.fine_cost + EMA * actual
        self.credit = (0.0 if self.credit is None else self.credit) + plan.expected - actual

    def fine_due(self, capture_ts: float, cfg: DistantFacesConfig, cost: float, share: float = 1.0) -> bool:
        """Whether this detected frame gets the fine pass (``cost``: what it adds to the usual pass, in usual
        passes): once ``fine_every_s`` has passed since the last one and the budget saved enough. Every detected
        frame saves ``budget`` (times ``share``, the part the worker can afford now); a new camera starts with one
        fine pass saved, and no more than that is kept."""
        if cfg.fine_every_s <= 0.0:
            return False
        saved = cost if self.credit is None else self.credit
        self.credit = min(saved + cfg.budget * share, cost + cfg.budget)
        waited = self.last_fine_ts is None or capture_ts - self.last_fine_ts >= cfg.fine_every_s - TOLERANCE_S \
            or capture_ts < self.last_fine_ts
        if not waited or self.credit < cost - 1e-9:
            return False
        self.credit -= cost
        self.last_fine_ts = capture_ts
        return True

    def spend(self, cost: float) -> None:
        """Regions' cost, in usual passes, taken from the budget (which may go below 0: fine passes wait)."""
        self.credit = (0.0 if self.credit is None else self.credit) - cost


def canvas_pixels(shape: tuple[int, ...], side: int) -> int:
    """The detector's input pixels for an image of ``shape`` resized to at most ``side`` (sides rounded up to 32,
    as the detector pads them)."""
    scale = fine_scale(shape, side)
    return -(-round(shape[0] * scale) // 32) * 32 * (-(-round(shape[1] * scale) // 32) * 32)


def fine_scale(shape: tuple[int, ...], side: int) -> float:
    """The scale of an image of ``shape`` resized to at most ``side`` (never enlarged)."""
    return min(1.0, side / max(shape[:2]))


def region_boxes(small: np.ndarray | None, shape: tuple[int, ...], cfg: DistantFacesConfig,
                 limit: int | None = None) -> tuple[tuple[int, int, int, int], ...]:
    """Square crops centred on the first ``regions`` (or ``limit``) small faces, moved inside the frame:
    REGION_FACTOR times the face's height at the regions' scale, rounded up to 32, between REGION_MIN_PX and
    ``region_px`` (in frame pixels: divided by that scale), and never less than REGION_FACTOR times the face's
    height in frame pixels (a crop capped at ``region_px`` is then detected shrunk: see `region_side`)."""
    count = cfg.regions if limit is None else min(limit, cfg.regions)
    if small is None or count == 0 or len(small) == 0:
        return ()
    height, width = shape[:2]
    scale = cfg.region_scale
    out = []
    for x1, y1, x2, y2 in small[:count].tolist():
        wanted = int(np.ceil(REGION_FACTOR * (y2 - y1) * scale))
        crop_side = min(cfg.region_px, max(REGION_MIN_PX, -(-wanted // 32) * 32))
        side = max(int(round(crop_side / scale)), int(np.ceil(REGION_FACTOR * (y2 - y1))))
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        left = int(min(max(0.0, cx - side / 2.0), max(0, width - side)))
        top = int(min(max(0.0, cy - side / 2.0), max(0, height - side)))
        out.append((left, top, min(width, left + side), min(height, top + side)))
    return tuple(out)


def region_side(box: tuple[int, int, int, int], cfg: DistantFacesConfig) -> int:
    """The side a region's crop is detected at: its own side at ``region_scale``, at most ``region_px``."""
    return max(1, min(cfg.region_px, int(round(max(box[2] - box[0], box[3] - box[1]) * cfg.region_scale))))


class StreamDetection:
    """Plans and runs a tracked camera stream's detection passes (see the module docstring)."""

    def __init__(self, engine: Engine, cfg: DistantFacesConfig) -> None:
        self.engine = engine
        self.base_side = engine.cfg.detector.max_side
        self.cfg = cfg
        self.spare = SpareCapacity(cfg.yield_after_ms)

    def plan(self, state: DistantState, frame: DecodedFrame, due: bool, lost: list[tuple[float, ...]]) -> FramePlan:
        """The plan for one frame of a camera (``due``: the detector must run on it, see `tracking.detect_fps`).
        ``lost``: the boxes of the camera's tracks the latest detected frame did not see; the small ones get a
        region too, so a distant face one pass missed is found again."""
        if not due:
            return FramePlan(frame, detect=False)
        shape = frame.image.shape
        share = self.spare.observe(frame.behind_s)
        if max(shape[:2]) * fine_scale(shape, self.cfg.max_side) <= self.base_side or share <= 0.0:
            return FramePlan(frame)  # the fine pass would see no more than the usual one, or the worker is behind
        base = canvas_pixels(shape, self.base_side)
        cost = canvas_pixels(shape, self.cfg.max_side) / base - 1.0 if state.fine_cost is None else state.fine_cost
        if state.fine_due(frame.capture_ts, self.cfg, cost, share):
            return FramePlan(frame, fine=True, expected=cost)
        limit = int(self.cfg.regions * share + 0.5)
        if limit == 0:
            return FramePlan(frame)
        wanted = self._wanted(state.small, lost, shape)
        regions = region_boxes(wanted, shape, self.cfg, limit)
        expected = sum(region_side(box, self.cfg) ** 2 / base + REGION_OVERHEAD for box in regions)
        state.spend(expected)
        targets = tuple(tuple(box) for box in wanted[:len(regions)].tolist())
        return FramePlan(frame, regions=regions, targets=targets, expected=expected)

    def _wanted(self, small: np.ndarray | None, lost: list[tuple[float, ...]], shape: tuple[int, ...]) -> np.ndarray:
        """The small faces of the latest detected frame, then the small lost tracks elsewhere."""
        boxes = np.zeros((0, 4), np.float32) if small is None else small
        if not lost:
            return boxes
        lost_boxes = np.asarray(lost, np.float32).reshape(-1, 4)
        scale = min(1.0, self.base_side / max(shape[:2]))
        lost_boxes = lost_boxes[(lost_boxes[:, 3] - lost_boxes[:, 1]) * scale < REGION_MAX_PX]
        if len(boxes) and len(lost_boxes):
            lost_boxes = lost_boxes[iou_matrix(lost_boxes, boxes).max(axis=1) < REGION_KEEP_IOU]
        return np.concatenate([boxes, lost_boxes]) if len(lost_boxes) else boxes

    def detect(self, plans: list[FramePlan], timer: StageTimer) -> list[Found | None]:
        """Each plan's faces (None where nothing was to be detected): the usual pass of the frames that have it
        in one batch, the fine pass of the others in another, every region of the batch in a third."""
        out: list[Found | None] = [None] * len(plans)
        base = [i for i, p in enumerate(plans) if p.detect and not p.fine]
        fine = [i for i, p in enumerate(plans) if p.fine]
        if not base and not fine:
            return out
        start = time.perf_counter()
        detector = self.engine.detector
        if fine:
            found, each = _timed(lambda: detector.detect([plans[i].frame.image for i in fine], self.cfg.max_side))
            for i, faces in zip(fine, found):
                out[i] = self._found(plans[i].frame, faces, fine_s=each)
        if base:
            found, each = _timed(lambda: detector.detect([plans[i].frame.image for i in base]))
            extra, seconds = self._regions([plans[i] for i in base], found)
            for i, faces, more, region_s in zip(base, found, extra, seconds):
                out[i] = self._found(plans[i].frame, concat(faces, more), base_s=each, region_s=region_s)
        timer.observe("detect", time.perf_counter() - start)
        return out

    def _found(self, frame: DecodedFrame, faces: Detections, **seconds: float) -> Found:
        """A frame's faces, with the small ones to look for again (when regions are on)."""
        if self.cfg.regions == 0 or len(faces) == 0:
            return Found(faces, np.zeros((0, 4), np.float32), **seconds)
        heights = (faces.boxes[:, 3] - faces.boxes[:, 1]) * self._base_scale(frame)
        small = np.flatnonzero(heights < REGION_MAX_PX)
        return Found(faces, faces.boxes[small[np.argsort(heights[small], kind="stable")]], **seconds)  # smallest 1st

    def _base_scale(self, frame: DecodedFrame) -> float:
        return min(1.0, self.base_side / max(frame.image.shape[:2]))

    def _regions(self, plans: list[FramePlan], found: list[Detections]) -> tuple[list[Detections], list[float]]:
        """Per plan: the small faces its regions found that its usual pass did not (one detector batch per crop
        size), and the seconds its crops took."""
        extra = [Detections.empty() for _ in plans]
        seconds = [0.0] * len(plans)
        by_side: dict[int, list[tuple[int, tuple[int, int, int, int]]]] = {}
        for k, plan in enumerate(plans):
            targets = plan.targets or (None,) * len(plan.regions)
            for box, target in zip(plan.regions, targets):
                if target is not None and _found_again(found[k], target):
                    continue  # the usual pass found this region's face in this frame: nothing left to look for
                by_side.setdefault(region_side(box, self.cfg), []).append((k, box))
        per_plan: list[list[Detections]] = [[] for _ in plans]
        for side, crops in by_side.items():
            images = [_crop(plans[k].frame.image, box, side) for k, box in crops]
            found_in, each = _timed(lambda: self.engine.detector.detect(images, max(1, side)))
            for (k, box), faces in zip(crops, found_in):
                per_plan[k].append(_inside(faces, box, plans[k].frame.image.shape, side))
                seconds[k] += each
        for k, parts in enumerate(per_plan):
            if parts:
                extra[k] = small_extra(found[k], _distinct(concat(*parts)), self._base_scale(plans[k].frame))
        return extra, seconds


def _timed(call) -> tuple[list, float]:
    """A detector call's results and its seconds per image."""
    start = time.perf_counter()
    out = call()
    return out, (time.perf_counter() - start) / max(1, len(out))


def _crop(image: np.ndarray, box: tuple[int, int, int, int], side: int) -> np.ndarray:
    """A region's crop, enlarged when its longer side is under ``side`` (the detector only ever shrinks)."""
    x1, y1, x2, y2 = box
    crop = np.ascontiguousarray(image[y1:y2, x1:x2])
    longest = max(x2 - x1, y2 - y1)
    if side <= longest:
        return crop
    factor = side / longest
    size = (max(1, round((x2 - x1) * factor)), max(1, round((y2 - y1) * factor)))
    return cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR)


def _found_again(faces: Detections, target: tuple[float, float, float, float]) -> bool:
    """Whether one of ``faces`` is the face ``target`` (its box on the camera's previous detected frame)."""
    if len(faces) == 0:
        return False
    return bool(iou_matrix(faces.boxes, np.float32([target])).max() >= REGION_KEEP_IOU)


def _inside(faces: Detections, box: tuple[int, int, int, int], shape: tuple[int, ...], side: int) -> Detections:
    """A crop's faces in frame pixels (an enlarged crop's scaled back), without those cut by the crop's edge
    (where it is not the frame's)."""
    x1, y1, x2, y2 = box
    if len(faces) == 0:
        return faces
    factor = max(1.0, side / max(x2 - x1, y2 - y1))
    boxes = faces.boxes / np.float32(factor) + np.float32([x1, y1, x1, y1])
    height, width = shape[:2]
    ok = ((boxes[:, 0] > x1 + 1) | (x1 == 0)) & ((boxes[:, 1] > y1 + 1) | (y1 == 0)) & \
        ((boxes[:, 2] < x2 - 1) | (x2 == width)) & ((boxes[:, 3] < y2 - 1) | (y2 == height))
    landmarks = faces.landmarks / np.float32(factor) + np.float32([x1, y1])
    return Detections(boxes[ok], faces.scores[ok], landmarks[ok].astype(np.float32))


def _distinct(faces: Detections) -> Detections:
    """One face per place when regions overlap: the best scored of boxes overlapping by IoU >= REGION_KEEP_IOU."""
    if len(faces) <= 1:
        return faces
    order = np.argsort(-faces.scores, kind="stable")
    iou = iou_matrix(faces.boxes, faces.boxes)
    keep: list[int] = []
    for i in order.tolist():
        if all(iou[i, j] < REGION_KEEP_IOU for j in keep):
            keep.append(i)
    return faces.select(keep)
