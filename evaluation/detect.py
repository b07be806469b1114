"""`argusnet eval detect`: detector recall, precision and AP at IoU 0.5 against dlib imglab XML boxes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evaluation.common import require_file, resolve
from gpu_worker.engine import Engine
from shared.errors import InputError
from shared.images import read_image
from shared.types import iou_matrix

IOU = 0.5


@dataclass(frozen=True)
class Annotated:
    path: Path
    boxes: np.ndarray  # (N, 4) x1y1x2y2 faces to find
    ignore: np.ndarray  # (M, 4) boxes marked ignore: detections there are neither right nor wrong


def read_imglab(xml_path: Path, images_dir: Path) -> list[Annotated]:
    require_file(xml_path, "boxes XML")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise InputError(f"{xml_path}: not valid XML: {exc}") from exc
    out = []
    for image in root.iter("image"):
        keep, ignore = [], []
        for box in image.iter("box"):
            try:
                x, y = float(box.get("left")), float(box.get("top"))
                w, h = float(box.get("width")), float(box.get("height"))
            except (TypeError, ValueError) as exc:
                raise InputError(f"{xml_path}: box without numeric left/top/width/height in {image.get('file')}") from exc
            (ignore if box.get("ignore") == "1" else keep).append([x, y, x + w, y + h])
        out.append(Annotated(resolve(images_dir, image.get("file", "")), np.array(keep, np.float32).reshape(-1, 4),
                             np.array(ignore, np.float32).reshape(-1, 4)))
    if not out:
        raise InputError(f"{xml_path}: no <image> elements")
    return out


def match_image(gt: Annotated, boxes: np.ndarray, scores: np.ndarray) -> tuple[list[tuple[float, bool]], int]:
    """Greedy matching by score: (score, is_true_positive) for every counted detection, and the ground truth count."""
    order = np.argsort(-scores)
    ious = iou_matrix(boxes[order], gt.boxes) if len(gt.boxes) else np.zeros((len(boxes), 0), np.float32)
    ign = iou_matrix(boxes[order], gt.ignore) if len(gt.ignore) else np.zeros((len(boxes), 0), np.float32)
    taken = np.zeros(len(gt.boxes), bool)
    marks = []
    for row, det in enumerate(order):
        cand = np.where(taken, -1.0, ious[row]) if ious.shape[1] else np.zeros(0)
        if cand.size and cand.max() >= IOU:
            taken[int(cand.argmax())] = True
            marks.append((float(scores[det]), True))
        elif not (ign.shape[1] and ign[row].max() >= IOU):
            marks.append((float(scores[det]), False))
    return marks, len(gt.boxes)


def average_precision(marks: list[tuple[float, bool]], total: int) -> float:
    """All-point interpolated AP (PASCAL VOC 2010+)."""
    if total == 0:
        return float("nan")
    ordered = sorted(marks, key=lambda m: -m[0])
    tp = np.cumsum([m[1] for m in ordered], dtype=np.float64)
    fp = np.cumsum([not m[1] for m in ordered], dtype=np.float64)
    recall = np.concatenate([[0.0], tp / total, [1.0]])
    precision = np.concatenate([[0.0], tp / np.maximum(tp + fp, 1e-9), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def run_detect(engine: Engine, xml_path: Path, images_dir: Path | None = None) -> dict:
    annotated = read_imglab(xml_path, images_dir or xml_path.parent)
    marks: list[tuple[float, bool]] = []
    total = 0
    for item in tqdm(annotated, desc="detect", unit="photo", disable=None, leave=False):
        found = engine.detect(read_image(item.path, engine.cfg.images))
        image_marks, count = match_image(item, found.boxes, found.scores)
        marks += image_marks
        total += count
    tp = sum(m[1] for m in marks)
    return {
        "images": len(annotated), "ground_truth": total, "detections": len(marks), "true_positives": tp,
        "recall": tp / total if total else float("nan"), "precision": tp / len(marks) if marks else float("nan"),
        "ap50": average_precision(marks, total), "iou": IOU, "detector": engine.detector.name,
        "score_threshold": engine.cfg.detector.score_threshold,
    }
