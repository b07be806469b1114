"""Pipeline benchmark: one video through the tracked pipeline and through per-frame recognition (every face of
every frame embedded, as the prototype did), same models, same run.

Both sides run with the configuration as loaded (so ``tracking.detect_fps`` applies to the tracked side: at 25 fps
the default detects every other frame; ARGUSNET__TRACKING__DETECT_FPS=0 detects every frame there too).
``faces_seen`` counts the faces in the video (the per-frame side detects every frame) and ``embedded_fraction`` is
the tracked side's embeddings over them.

The video is decoded into memory first, so both sides are timed on detection, tracking, alignment, embedding and
search only (the camera node decodes and downscales in production). The gallery holds the demo portrait only:
the people in the clip are not enrolled, so the tracked side also exercises visitors.

``--strategies`` also compares the distant-face strategies (`tracking.distant`, bench/distant.py) in the same
run: each one's tracked fps on the video and, on ``--scenes`` distant-face scenes of `eval track --face-height`
(``--face-height`` px faces in 1280x720 frames), how soon a new face is found and how much of it is covered.

Run: argusnet bench pipeline --video ../shared/data/facenet-pytorch/arcade.mp4 --compare per-frame --json OUT
     argusnet bench pipeline --video ../shared/data/facenet-pytorch/arcade.mp4 --strategies --json OUT
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from argusnet.commands.demo import enrol_demo_person
from argusnet.config import load_config
from bench.common import emit, parser
from bench.distant import compare
from gpu_worker.engine import Engine
from gpu_worker.processing import PerFrameProcessor
from gpu_worker.tracked import TrackedProcessor
from gpu_worker.video import StageTimes, run_frames, video_frames
from shared.errors import InputError
from store.config import LocalStoreConfig


def require_data_dir() -> Path:
    """../shared/data beside the repository (the distant-face scenes are made of its faces)."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (path / "deepface" / "identities.csv").is_file():
        raise InputError(f"--strategies needs the face data at {path}")
    return path


def measure(processor, frames, fps: float) -> dict:
    timer = StageTimes()
    events = []
    run = run_frames(processor, frames, "bench", fps, events.append, timer)
    return {"frames": run.frames, "seconds": round(run.seconds, 3), "fps": round(run.fps, 2),
            "faces_seen": processor.faces_seen, "faces_followed": getattr(processor, "faces_followed", 0),
            "embeddings": processor.embeddings, "events": len(events),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(timer.seconds.items())}}


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--compare", choices=["per-frame"], default="per-frame")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--strategies", action="store_true", help="also compare the distant-face strategies")
    p.add_argument("--scenes", type=int, default=5, help="distant-face scenes per strategy (--strategies)")
    p.add_argument("--face-height", type=float, default=40.0, help="face height in those scenes, px")
    args = p.parse_args(argv)
    if not 1 <= args.scenes <= 100 or not 8 <= args.face_height <= 400:
        raise InputError("--scenes must be 1..100 and --face-height 8..400")
    cfg = load_config()
    frames = [image for _, _, image in video_frames(args.video, args.frames)]
    engine = Engine(cfg)
    engine.warm_up()
    with tempfile.TemporaryDirectory(prefix="argusnet-bench-") as tmp:
        store = enrol_demo_person(engine, LocalStoreConfig(path=Path(tmp) / "gallery"))
        tracked = measure(TrackedProcessor(engine, store, cfg), frames, 25.0)
        per_frame = measure(PerFrameProcessor(engine, store.persons), frames, 25.0)
        strategies = None
        if args.strategies:
            strategies = compare(store, frames, 25.0, require_data_dir(), args.scenes, args.face_height, measure)
        store.close()
    result = {"benchmark": "pipeline", "video": str(args.video), "frames": len(frames),
              "frame_shape": list(frames[0].shape) if frames else None, "model": engine.embedder.name,
              "provider": engine.embedder.provider, "tracked_fps": tracked["fps"], "per_frame_fps": per_frame["fps"],
              "speedup": round(tracked["fps"] / per_frame["fps"], 2),
              # faces in the video: the per-frame side detects every frame; the tracked side detects only the frames
              # tracking.detect_fps asks for and follows the faces through the others
              "faces_seen": per_frame["faces_seen"],
              "faces_detected_tracked": tracked["faces_seen"] - tracked["faces_followed"],
              "embeddings_tracked": tracked["embeddings"], "embeddings_per_frame": per_frame["embeddings"],
              "embedded_fraction": round(tracked["embeddings"] / max(1, per_frame["faces_seen"]), 4),
              "tracked": tracked, "per_frame": per_frame,
              "distant": {"fine_every_s": cfg.tracking.distant.fine_every_s, "max_side": cfg.tracking.distant.max_side,
                          "regions": cfg.tracking.distant.regions},
              "targets": {"tracked_fps_min": 20, "speedup_min": 3, "embedded_fraction_max": 0.10}}
    if strategies is not None:
        result["strategies"] = strategies
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
