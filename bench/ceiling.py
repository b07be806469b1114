"""The host's ceiling for the capacity benchmark: how many cameras its cores could serve if a worker did nothing but
decode each frame's JPEG and run the detector once on it (no tracking, alignment, embedding, search, publishing,
no broker). A ramp cannot sustain more; on a host where this ceiling is below a target, no worker code reaches it
at every frame detected.

Measured on the capacity clip's own JPEGs, the way the worker does it: ``simplejpeg`` decoding to RGB, then the
configured detector's ``detect()`` (its pre-processing, ONNX Runtime, anchor decode, NMS) with the ONNX Runtime
threads a worker gives each of its ``worker.detect_threads`` detection threads, and its OpenCV threads. Costs are
CPU time of this process per frame (medians of rounds), so a session's intra-op threads count in full.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Callable

import simplejpeg

ROUNDS = 7
FRAMES_PER_ROUND = 15
WARMUP_FRAMES = 3


def cpu_ms_per_call(fn: Callable[[int], object], rounds: int = ROUNDS, per_round: int = FRAMES_PER_ROUND) -> float:
    """Median over ``rounds`` of the process CPU time of ``per_round`` calls ``fn(i)``, per call, in ms."""
    for i in range(WARMUP_FRAMES):
        fn(i)
    samples = []
    for r in range(rounds):
        start = time.process_time()
        for i in range(per_round):
            fn(r * per_round + i)
        samples.append((time.process_time() - start) * 1000.0 / per_round)
    return statistics.median(samples)


def host_cores() -> int:
    """CPUs this process may run on (a container's CPU set, not the machine's)."""
    return len(os.sched_getaffinity(0))


def ceiling(jpegs: list[bytes], overrides: dict, fps: float, rounds: int = ROUNDS,
            per_round: int = FRAMES_PER_ROUND) -> dict:
    """CPU ms a frame for decoding and detecting, and the cameras at ``fps`` those two alone fill the host's cores
    with (``cameras_max``, rounded down)."""
    from argusnet.config import load_config
    from gpu_worker.detect import build_detector
    from gpu_worker.runtime import apply_opencv_threads, worker_runtime

    cfg = load_config(environ={}, overrides=overrides)
    runtime = worker_runtime(cfg.runtime, cfg.worker.detect_threads)
    apply_opencv_threads(runtime)  # as the worker does (this process's OpenCV from here on)
    detector = build_detector(cfg.detector, runtime)
    frames = [simplejpeg.decode_jpeg(j, colorspace="RGB") for j in jpegs]
    decode_ms = cpu_ms_per_call(lambda i: simplejpeg.decode_jpeg(jpegs[i % len(jpegs)], colorspace="RGB"), rounds,
                                per_round)
    detect_ms = cpu_ms_per_call(lambda i: detector.detect([frames[i % len(frames)]]), rounds, per_round)
    cores = host_cores()
    per_camera = round(fps * (decode_ms + detect_ms) / 1000.0, 3)  # cores one camera keeps busy with these two
    return {"cores": cores, "detect_threads": cfg.worker.detect_threads, "onnx_threads": runtime.threads,
            "frame_shape": list(frames[0].shape), "decode_cpu_ms": round(decode_ms, 2),
            "detect_cpu_ms": round(detect_ms, 2), "cores_per_camera": per_camera,
            "cameras_max": math.floor(cores / per_camera) if per_camera > 0 else None}
