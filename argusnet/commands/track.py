"""`argusnet track VIDEO --gallery DIR --events-jsonl OUT [--json SUMMARY]`: the tracked pipeline on a video file
in one process, for batch analysis and tests."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from argusnet.commands.common import (
    add_gallery_arg,
    engine_from,
    open_cli_store,
    print_json,
    process_id,
)
from gpu_worker.factory import build_processor
from gpu_worker.video import StageTimes, run_frames, video_frames
from shared.errors import InputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("track", help="run detection, tracking and recognition on a video file (no broker)")
    p.add_argument("video", type=Path, metavar="VIDEO")
    add_gallery_arg(p)
    p.add_argument("--events-jsonl", type=Path, required=True, metavar="OUT", help="one JSON object per event")
    p.add_argument("--json", type=Path, default=None, metavar="SUMMARY", help="write a summary JSON here")
    p.add_argument("--camera", default="video", type=process_id,
                   help="camera id to put on the events (default: video)")
    p.set_defaults(handler=cmd_track)


def cmd_track(args: argparse.Namespace) -> int:
    if not args.video.is_file():
        raise InputError(f"video file {args.video} does not exist")
    engine = engine_from(args)
    counts: Counter = Counter()
    names: Counter = Counter()
    args.events_jsonl.parent.mkdir(parents=True, exist_ok=True)
    timer = StageTimes()
    with open_cli_store(args, engine.cfg, engine) as store, open(args.events_jsonl, "w", encoding="utf-8") as out:
        processor = build_processor(engine, store, engine.cfg, live_ttl_s=engine.cfg.retention.live_ttl_s)

        def on_event(event) -> None:
            out.write(json.dumps(event.to_json_dict()) + "\n")
            counts[event.type] += 1
            if event.type == "track_identified":
                names[event.name] += 1

        run = run_frames(processor, video_frames(args.video), args.camera, 25.0, on_event, timer)
    summary = {"video": str(args.video), "frames": run.frames, "seconds": round(run.seconds, 2),
               "fps": round(run.fps, 2), "events": dict(counts), "identified": dict(names),
               "faces_seen": getattr(processor, "faces_seen", None),
               "faces_followed": getattr(processor, "faces_followed", None),
               "embeddings": getattr(processor, "embeddings", None),
               "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
               "processor": engine.cfg.tracking.processor, "model": engine.embedder.name}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print_json(summary)
    return 0
