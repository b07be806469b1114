"""Camera node benchmark: CPU per 720p frame for what the node does after the source has decoded it: downscale,
the motion gate (when on), JPEG encode and Frame encode (msgpack). Source decoding is excluded (frames are decoded first).
Target: <= 5 ms per 720p frame (10 fps on a Pi-class core).

Run: argusnet bench camera --json out/bench-camera.json
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from bench.common import emit, parser
from camera_node.capture import MotionGate, downscale
from camera_node.demo import render
from camera_node.node import encode_jpeg
from shared.protocol import Frame, encode

ARCADE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facenet-pytorch" / "arcade.mp4"


def frames_720p(n: int) -> tuple[list[np.ndarray], str]:
    out = []
    if ARCADE.is_file():
        cap = cv2.VideoCapture(str(ARCADE))
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(cv2.cvtColor(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
        cap.release()
        return out, "arcade.mp4 scaled to 1280x720"
    return [cv2.resize(render(i / 10)[0], (1280, 720)) for i in range(n)], "demo source scaled to 1280x720"


def per_frame(frames: list[np.ndarray], max_side: int, quality: int, motion_gate: bool = False) -> dict:
    gate = MotionGate(threshold=2.0, keepalive_s=5.0) if motion_gate else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    size = 0
    for i, image in enumerate(frames):
        small = downscale(image, max_side)
        if gate is not None:
            gate.passes(small, i / 10)
        jpeg = encode_jpeg(small, quality)
        h, w = small.shape[:2]
        size += len(encode(Frame(camera_id="bench", seq=i, capture_ts=time.time(), send_ts=time.time(), width=w,
                                 height=h, jpeg=jpeg)))
    n = len(frames)
    return {"cpu_ms_per_frame": round((time.process_time() - cpu0) * 1000 / n, 3),
            "wall_ms_per_frame": round((time.perf_counter() - wall0) * 1000 / n, 3),
            "kb_per_frame": round(size / n / 1024, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100)
    args = p.parse_args(argv)
    frames, source = frames_720p(args.frames)
    per_frame(frames[:5], 1280, 85)  # warm up
    runs = {f"max_side_{side}": per_frame(frames, side, 85) for side in (1280, 640)}
    runs["max_side_1280_motion_gate"] = per_frame(frames, 1280, 85, motion_gate=True)
    result = {"benchmark": "camera", "frames": len(frames), "source": source, "jpeg_quality": 85, "runs": runs,
              "cpu_ms_per_frame": runs["max_side_1280"]["cpu_ms_per_frame"],
              "targets": {"cpu_ms_per_frame_max": 5.0}}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
