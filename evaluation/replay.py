"""Clips replayed as a camera node sends them, and models that remember what they already computed.

``camera_frames`` samples a video at the node's rate, downscales each frame with the node's own ``downscale``,
JPEG-encodes it with the node's ``encode_jpeg`` and decodes it as the worker does (simplejpeg, RGB), so the
pipeline sees the pixels a live worker sees. A loop of the clip starts at another phase of the node's sampling
grid (a camera's grid does not restart with the file), so the same strangers come back on other frames.

``MemoDetector`` and ``MemoEmbedder`` wrap the real models and keep each result by the exact bytes of its input:
replaying 20 loops of a clip under many galleries and rules detects each distinct frame once and embeds each
distinct face chip once, and returns exactly what the model returned for those bytes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import simplejpeg

from camera_node.capture import downscale, encode_jpeg
from gpu_worker.detect.base import Detector
from gpu_worker.embed.base import Embedder
from gpu_worker.video import video_frames
from shared.errors import InputError
from shared.types import Detections

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0  # loop phases spread evenly over the sampling grid


@dataclass(frozen=True)
class CameraFrame:
    """One frame as the worker receives it: ``loop`` of the clip, ``source_index`` the clip frame it was sampled
    from, ``capture_ts`` seconds from the replay's start."""

    loop: int
    source_index: int
    capture_ts: float
    image: np.ndarray


class Clip:
    """A video's frames, read once (RGB, full resolution), with its frame rate."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise InputError(f"clip not found: {path}")
        self.path = path
        self.frames = [image for _, _, image in video_frames(path)]
        if not self.frames:
            raise InputError(f"{path}: no frame could be read")
        import cv2

        cap = cv2.VideoCapture(str(path))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0)
        cap.release()
        self._received: dict[tuple[int, int, int], np.ndarray] = {}

    def received(self, index: int, height: int, quality: int = 85) -> np.ndarray:
        """Frame ``index`` as a worker receives it from a node sending ``height`` px at ``quality`` (kept)."""
        key = (index, height, quality)
        if key not in self._received:
            self._received[key] = as_received(self.frames[index], height, quality)
        return self._received[key]

    @property
    def duration_s(self) -> float:
        return len(self.frames) / self.fps


def max_side_for(shape: tuple[int, ...], height: int) -> int:
    """The node's ``max_side`` that makes a frame of ``shape`` ``height`` px tall (its shorter side), e.g. 1280 for
    720 on a 16:9 clip."""
    h, w = shape[:2]
    return int(round(max(h, w) * height / min(h, w)))


def sampled_indices(clip: Clip, fps: float, loop: int) -> list[int]:
    """Clip frames a node sampling at ``fps`` sends in ``loop`` (its grid shifted by a per-loop phase)."""
    step = clip.fps / fps
    phase = ((loop * GOLDEN) % 1.0) * step
    out = []
    k = 0
    while True:
        index = int(math.floor(phase + k * step))
        if index >= len(clip.frames):
            return out
        out.append(index)
        k += 1


def as_received(image: np.ndarray, height: int, quality: int = 85) -> np.ndarray:
    """The node's downscale + JPEG, then the worker's decode."""
    small = downscale(image, max_side_for(image.shape, height))
    return simplejpeg.decode_jpeg(encode_jpeg(small, quality), colorspace="RGB")


def camera_frames(clip: Clip, height: int, fps: float, loops: int, quality: int = 85) -> Iterator[CameraFrame]:
    """``loops`` replays of the clip at ``fps`` and ``height``, as a worker receives them, one after another in
    time (capture_ts continues across loops)."""
    t = 0.0
    for loop in range(loops):
        for index in sampled_indices(clip, fps, loop):
            yield CameraFrame(loop, index, t, clip.received(index, height, quality))
            t += 1.0 / fps


def _key(array: np.ndarray, *extra) -> tuple:
    data = np.ascontiguousarray(array)
    return (hashlib.blake2b(data.data, digest_size=16).digest(), data.shape, *extra)


class MemoDetector:
    """A detector that answers an image it has seen (same bytes, same ``max_side``) from memory."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self.name = inner.name
        self.provider = inner.provider
        self._memo: dict[tuple, Detections] = {}

    def detect(self, images: Sequence[np.ndarray], max_side: int | None = None) -> list[Detections]:
        keys = [_key(image, max_side) for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        if missing:
            found = self.inner.detect([images[i] for i in missing], max_side)
            for i, faces in zip(missing, found):
                self._memo[keys[i]] = faces
        return [self._memo[key] for key in keys]


class MemoEmbedder:
    """An embedder that answers a chip it has seen (same bytes) from memory."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.template = inner.template
        self.provider = inner.provider
        self.threshold = inner.threshold
        self.name_threshold = inner.name_threshold
        self._memo: dict[tuple, np.ndarray] = {}

    def embed(self, chips: np.ndarray) -> np.ndarray:
        keys = [_key(chip) for chip in chips]
        missing = [i for i, key in enumerate(keys) if key not in self._memo]
        if missing:
            vectors = self.inner.embed(np.stack([chips[i] for i in missing]))
            for i, vector in zip(missing, vectors):
                self._memo[keys[i]] = vector
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._memo[key] for key in keys])
