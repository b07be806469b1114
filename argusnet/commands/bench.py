"""`argusnet bench NAME [options]`: run a benchmark from bench/ (JSON out, ratios against a baseline)."""

from __future__ import annotations

import argparse
import importlib

from shared.errors import InputError

BENCHMARKS = {
    "detect": ("bench.detect_speed", "detector ms per 640x480 frame, fp32 baseline vs optimised variants"),
    "search": ("bench.search", "gallery search: HNSW vs exact on a synthetic 1M x 128 gallery"),
    "embed": ("bench.embed", "default embedder ms per face vs dlib's own"),
    "pipeline": ("bench.pipeline", "a video through the tracked pipeline vs per-frame recognition"),
    "tracker": ("bench.tracker", "tracker update ms per frame with 20 live tracks, per backend"),
    "broker": ("bench.broker", "broker forwarding of 100 KB frames: messages/s and added latency"),
    "camera": ("bench.camera", "camera node CPU per 720p frame"),
    "node": ("bench.node_rss", "camera node RSS streaming a 720p 10 fps file to a real broker (node venv)"),
    "overload": ("bench.overload", "32 cameras at 5 fps into one worker that cannot keep up: memory, fairness"),
    "hostile": ("bench.hostile", "an honest demo camera, quiet then beside a rogue node (bombs, forged times and ids, a "
                "flood of ids): worker alive, RSS, honest events, p95 latency ratio"),
    "faults": ("bench.faults", "a real site through a hung Redis (SIGSTOP) and a full disk under a local store: "
               "events lost from the log, frames dropped, tracks per walk of the demo face, epochs"),
    "encryption": ("bench.encryption", "local store with vs without store.encryption_key_file: enrol, cold start"),
    "store": ("bench.store", "Redis vs local store: enrol -> searchable, match_or_create/s, cold start, memory"),
    "link": ("bench.link", "a 720p camera behind a tc-shaped link (2/4/10 Mbit/s): fps, JPEG quality, latency"),
    "capacity": ("bench.capacity", "720p 10 fps cameras one worker sustains (p95 <= 250 ms, drops <= 1%) vs per_frame"),
    "dashboard": ("bench.dashboard", "event log -> row in Chromium p50/p95 ms; 20 SSE clients at 50 events/s: lag, RSS"),
    "soak": ("bench.soak", "a real `up` (2 workers, 6 cameras) for 30 min: RSS, fds, p95 drift, events/camera, drops"),
    "strangers": ("bench.strangers", "a real `up`, the demo portrait enrolled alone, a street camera looping "
                  "arcade.mp4 at 720p: street tracks named (target 0)"),
    "gpu": ("bench.gpu", "the models on the CUDA provider (verified, no CPU fall-back): embed batch-64 faces/s, detect "
            "batched 640x640 frames/s"),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark: " + ", ".join(BENCHMARKS),
                       description="\n".join(f"{k}: {v[1]}" for k, v in BENCHMARKS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(BENCHMARKS))
    p.add_argument("options", nargs=argparse.REMAINDER, help="options of that benchmark (try NAME --help)")
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    module_name = BENCHMARKS[args.name][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise InputError(f"benchmark {args.name} is not available: {exc}") from exc
    return int(module.main(args.options) or 0)
