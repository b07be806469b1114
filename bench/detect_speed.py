"""Detector benchmark: milliseconds per 640x480 frame for the default RetinaFace MobileNet-0.25 on this machine.

Measured, in one run and on the same frame: the whole ``detect()`` call (pre-processing, ONNX Runtime, anchor
decode, NMS) at batch 1 and batch 4, the ONNX Runtime session alone (the floor any pre/post-processing sits
on), pre-processing as ``detect()`` does it (OpenCV split, per-plane subtraction) against the same steps as
whole-array numpy (the baseline), and
``detect()`` at a smaller ``max_side`` as the speed/recall trade-off users can choose, and ``detect()`` on the
whole 1920x1080 frame (resized inside to max_side) as a worker sees a 1080p camera.

The frame is a real 640x480 crop of ``../shared/data/facenet-pytorch/arcade.mp4`` when the data is there, else
the scikit-image portrait on a 640x480 canvas.

Run: argusnet bench detect --json out/bench-detect.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from argusnet.config import ArgusConfig
from bench.common import emit, parser, summary_ms, timings_ms
from gpu_worker.detect.config import RetinaFaceConfig
from gpu_worker.detect.retinaface import BGR_MEAN, RetinaFaceDetector

ARCADE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "facenet-pytorch" / "arcade.mp4"


def arcade_frame() -> np.ndarray | None:
    """Frame 100 of arcade.mp4 at full size (1920x1080), RGB; None without the data."""
    if not ARCADE.is_file():
        return None
    capture = cv2.VideoCapture(str(ARCADE))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 100)
    ok, frame = capture.read()
    capture.release()
    return np.ascontiguousarray(frame[..., ::-1]) if ok else None


def test_frame(full: np.ndarray | None) -> tuple[np.ndarray, str]:
    if full is not None:
        scaled = cv2.resize(full, (853, 480), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(scaled[:, 106:746]), "arcade.mp4 frame 100, 640x480 centre crop"
    from skimage.data import astronaut

    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[:, 80:560] = cv2.resize(astronaut(), (480, 480), interpolation=cv2.INTER_AREA)
    return canvas, "scikit-image astronaut on a 640x480 canvas"


def numpy_preprocess(image: np.ndarray) -> np.ndarray:
    """The straightforward numpy version of the same pre-processing (the baseline)."""
    batch = np.zeros((1, *image.shape), np.float32)
    np.subtract(image[..., ::-1], np.asarray(BGR_MEAN, np.float32), out=batch[0], dtype=np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=60)
    p.add_argument("--small-side", type=int, default=512, help="the smaller max_side variant (default 512)")
    args = p.parse_args(argv)

    cfg = ArgusConfig()
    full = arcade_frame()
    frame, frame_source = test_frame(full)
    detector = RetinaFaceDetector(cfg.detector, cfg.runtime)
    small = RetinaFaceDetector(RetinaFaceConfig(max_side=args.small_side), cfg.runtime)
    tensor, _ = detector.preprocess([frame])
    feed = {detector.input_name: tensor}
    n = args.repeats
    detect_ms = summary_ms(timings_ms(lambda: detector.detect([frame]), n))
    batch4 = summary_ms([t / 4 for t in timings_ms(lambda: detector.detect([frame] * 4), max(10, n // 4))])
    session_ms = summary_ms(timings_ms(lambda: detector.session.run(None, feed), n))
    pre_cv = summary_ms(timings_ms(lambda: detector.preprocess([frame]), n))
    pre_np = summary_ms(timings_ms(lambda: numpy_preprocess(frame), n))
    small_ms = summary_ms(timings_ms(lambda: small.detect([frame]), n))
    result = {
        "benchmark": "detect", "model": detector.name, "provider": detector.provider, "frame": frame_source,
        "frame_shape": list(frame.shape), "threads": cfg.runtime.threads,
        "faces_found": len(detector.detect([frame])),
        "ms_per_frame": detect_ms["median"],
        "detect_ms": detect_ms,
        "detect_batch4_ms_per_frame": batch4,
        "session_only_ms": session_ms,
        "preprocess_ms": {"planes": pre_cv, "numpy_baseline": pre_np,
                          "speedup": round(pre_np["median"] / pre_cv["median"], 2)},
        f"detect_max_side_{args.small_side}_ms": small_ms,
        "detect_full_frame_ms": None if full is None else {
            "frame_shape": list(full.shape), **summary_ms(timings_ms(lambda: detector.detect([full]), n))},
        "targets": {"ms_per_frame_max": 10.0},
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
