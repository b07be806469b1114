"""The whole recognition pipeline on a video file in one process (no broker): `argusnet track` and the
pipeline benchmark use it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

from gpu_worker.processing import DecodedFrame, FrameProcessor
from shared.errors import InputError
from shared.protocol import TrackEvent


class NullTimer:
    def observe(self, stage: str, seconds: float) -> None:
        pass


@dataclass
class StageTimes:
    """Seconds spent per stage (detect, track, embed, search)."""

    seconds: dict[str, float] = field(default_factory=dict)

    def observe(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def video_frames(path: Path, limit: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time in the video in s, RGB frame) for every frame of ``path``."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    index = 0
    try:
        while limit is None or index < limit:
            ok, frame = cap.read()
            if not ok:
                return
            yield index, index / fps, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


@dataclass(frozen=True)
class RunStats:
    """How many frames ``run_frames`` fed and the wall-clock seconds it took."""

    frames: int
    seconds: float

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def run_frames(processor: FrameProcessor, frames: list[np.ndarray] | Iterator, camera: str, fps: float,
               on_event: Callable[[TrackEvent], None], timer=None) -> RunStats:
    """Feed frames (RGB arrays, or (index, t, image) tuples) one by one."""
    timer = timer or NullTimer()
    start_wall, count = time.perf_counter(), 0
    t0 = time.time()
    for item in frames:
        index, t, image = item if isinstance(item, tuple) else (count, count / fps, item)
        for event in processor.process([DecodedFrame(camera, index, t0 + t, image, time.time())], timer):
            on_event(event)
        count += 1
    return RunStats(count, time.perf_counter() - start_wall)
