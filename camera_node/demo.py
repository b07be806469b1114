"""The built-in ``demo`` source: no camera, no data. The public domain astronaut portrait from scikit-image
moves over a textured background on a 12-second loop: it walks in from the left, grows as it comes closer,
leaves on the right, stays away for two seconds and comes back, so one face is tracked, lost and found again."""

from __future__ import annotations

import functools
import math
import threading
import time

import cv2
import numpy as np

from camera_node.base import Captured, FacePose, Timeline

WIDTH, HEIGHT = 960, 540
PERIOD_S = 12.0
ABSENT_S = 2.0  # at the end of each period the face is out of the frame
PORTRAIT_BOX = (126, 0, 326, 220)  # the portrait's head in skimage.data.astronaut() (x1, y1, x2, y2)
FACE_IN_PORTRAIT = (0.26, 0.16, 0.74, 0.73)  # where the face sits inside that crop (fractions)


@functools.lru_cache(maxsize=1)
def _portrait() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    x1, y1, x2, y2 = PORTRAIT_BOX
    crop = np.ascontiguousarray(data.astronaut()[y1:y2, x1:x2])
    h, w = crop.shape[:2]
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.46), int(h * 0.48)), 0, 0, 360, 1.0, -1)
    return crop, cv2.GaussianBlur(alpha, (0, 0), 6)[..., None]


@functools.lru_cache(maxsize=1)
def _background() -> np.ndarray:
    """A deterministic textured wall-and-floor scene."""
    rng = np.random.default_rng(7)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 3)
    y = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None]
    base = np.where(y < 0.7, 150 - 40 * y, 90 + 60 * (y - 0.7))
    grey = np.clip(base + 12 * noise, 0, 255)
    scene = np.stack([grey * 0.95, grey * 0.9, grey * 0.8], axis=2)
    for x in range(60, WIDTH, 220):
        scene[40:330, x:x + 90] = (70, 95, 120)  # windows
    return scene.astype(np.uint8)


def pose_at(t: float) -> tuple[float, float, float] | None:
    """(centre x, centre y, height in px) of the portrait at loop time ``t``; None while it is away."""
    phase = t % PERIOD_S
    walk = PERIOD_S - ABSENT_S
    if phase >= walk:
        return None
    u = phase / walk
    height = 140 + 160 * math.sin(math.pi * u)  # comes closer in the middle of the walk
    x = -120 + (WIDTH + 240) * u
    y = HEIGHT * 0.45 + 30 * math.sin(2 * math.pi * u)
    return x, y, height


def render(t: float) -> tuple[np.ndarray, FacePose]:
    frame = _background().copy()
    portrait, alpha = _portrait()
    pose = pose_at(t)
    index = int(t * 1000)
    if pose is None:
        return frame, FacePose(index, (0, 0, 0, 0), (0.0, 0.0, 0.0, 0.0), False)
    cx, cy, height = pose
    scale = height / portrait.shape[0]
    w, h = max(2, int(portrait.shape[1] * scale)), max(2, int(height))
    img = cv2.resize(portrait, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    ox, oy = int(cx - w / 2), int(cy - h / 2)
    x0, y0, x1, y1 = max(0, ox), max(0, oy), min(WIDTH, ox + w), min(HEIGHT, oy + h)
    if x1 > x0 and y1 > y0:
        region = frame[y0:y1, x0:x1].astype(np.float32)
        aa = a[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        frame[y0:y1, x0:x1] = (region * (1 - aa) + img[y0 - oy:y1 - oy, x0 - ox:x1 - ox] * aa).astype(np.uint8)
    fx1, fy1, fx2, fy2 = FACE_IN_PORTRAIT
    face = (ox + fx1 * w, oy + fy1 * h, ox + fx2 * w, oy + fy2 * h)
    visible = face[0] >= 0 and face[1] >= 0 and face[2] <= WIDTH and face[3] <= HEIGHT
    return frame, FacePose(index, (ox, oy, ox + w, oy + h), face, visible)


class DemoSource:
    """Pull source at ``fps`` following real time (a late reader skips frames, like a camera)."""

    live = False

    def __init__(self, fps: float, interrupt: threading.Event | None = None) -> None:
        self.ended = False
        self._timeline = Timeline(fps, interrupt)
        self._last = -1
        self._t0 = time.monotonic()
        self.fps = fps

    def read(self) -> Captured | None:
        index = self._timeline.next_index(self._last)
        if index is None:
            return None
        self._last = index
        image, pose = render(index / self.fps)
        return Captured(image, time.time(), pose)

    def close(self) -> None:
        pass
