"""Tracker benchmark: ``update()`` milliseconds per frame with 20 live tracks (synthetic faces moving with noise,
1,000 frames at 10 fps), per backend. Target: <= 1 ms per frame.

Run: argusnet bench tracker --json out/bench-tracker.json
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from bench.common import emit, parser, summary_ms
from shared.types import Detections
from tracker.base import FrameMeta
from tracker.config import ByteTrackConfig, SortConfig
from tracker.factory import build_tracker


def scene(tracks: int, frames: int, seed: int = 0) -> list[Detections]:
    rng = np.random.default_rng(seed)
    pos = rng.uniform([0, 0], [1800, 1000], (tracks, 2))
    vel = rng.normal(0, 8, (tracks, 2))
    size = rng.uniform(40, 120, tracks)
    out = []
    for _ in range(frames):
        pos = (pos + vel) % [1800, 1000]
        jitter = rng.normal(0, 1.5, (tracks, 4))
        boxes = np.concatenate([pos, pos + size[:, None]], axis=1) + jitter
        scores = rng.uniform(0.85, 1.0, tracks)
        out.append(Detections(boxes.astype(np.float32), scores.astype(np.float32),
                              np.zeros((tracks, 5, 2), np.float32)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tracks", type=int, default=20)
    p.add_argument("--frames", type=int, default=1000)
    args = p.parse_args(argv)
    frames = scene(args.tracks, args.frames)
    result = {"benchmark": "tracker", "tracks": args.tracks, "frames": args.frames, "backends": {}}
    for cfg in (ByteTrackConfig(), SortConfig()):
        tracker = build_tracker(cfg)
        times, live = [], []
        for i, d in enumerate(frames):
            t0 = time.perf_counter()
            out = tracker.update(d, FrameMeta("bench", i, i / 10.0, 1920, 1080))
            times.append((time.perf_counter() - t0) * 1000)
            live.append(len(out))
        s = summary_ms(times[10:])
        result["backends"][cfg.type] = {"update_ms_per_frame": s["median"],
                                        "p99_ms": round(float(np.percentile(times[10:], 99)), 3),
                                        "mean_live_tracks": round(float(np.mean(live[10:])), 1)}
    result["update_ms_per_frame"] = result["backends"]["bytetrack"]["update_ms_per_frame"]
    result["targets"] = {"update_ms_per_frame_max": 1.0}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
