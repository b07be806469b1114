"""GPU check: the worker's models on ONNX Runtime's CUDA provider, with the provider actually used verified (no
silent CPU fall-back: ``runtime.require_provider``), and their throughput in one run:

- embed: faces per second at batch ``--embed-batch`` (64) of aligned chips (the scikit-image portrait's face);
- detect: frames per second of batched 640x640 frames (``--detect-batch``, 8; the portrait on a grey canvas),
  pre-processing, ONNX Runtime, anchor decode and NMS included.

On a GPU host, `make gpu-check` (bench/gpu-check.sh, a few minutes in all) builds a venv of the whole pinned tree
with onnxruntime-gpu and its CUDA libraries (requirements-gpu.lock; the Dockerfile's `--build-arg EXTRAS=gpu`
image has the same) and runs, each under a time limit::

    argusnet bench gpu --json out/bench-gpu.json
    argusnet bench gpu --provider cpu --json out/bench-gpu-cpu.json   # the same host's CPU, for the ratio
    argusnet bench capacity --only tracked --set runtime.require_provider=cuda --step-seconds 10 --warmup 3 \
        --json out/bench-capacity-gpu.json

``--provider cpu`` runs the same measurement on the CPU provider (what a host without a GPU gives, and a check
of this script anywhere). A host where ONNX Runtime cannot run the requested provider fails (exit 1) with a
message naming it: no number is ever measured on a silent CPU fall-back.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import cv2
import numpy as np
import onnxruntime as ort

from argusnet.config import load_config
from bench.common import emit, parser, summary_ms
from gpu_worker.align import align_faces
from gpu_worker.engine import Engine
from shared.errors import ModelError

FRAME_SIDE = 640


def _engine(provider: str) -> Engine:
    cfg = load_config(environ={})
    runtime = cfg.runtime.model_copy(update={"providers": [provider], "require_provider": provider})
    engine = Engine(cfg.model_copy(update={"runtime": runtime}))
    engine.warm_up()
    return engine


def _portrait_frame() -> np.ndarray:
    from skimage.data import astronaut

    frame = np.full((FRAME_SIDE, FRAME_SIDE, 3), 110, np.uint8)
    frame[64:576, 64:576] = cv2.resize(astronaut(), (512, 512), interpolation=cv2.INTER_AREA)
    return frame


def _rate(fn, items: int, seconds: float, warmup: int = 3) -> dict[str, Any]:
    """Call ``fn`` (which handles ``items`` things) for about ``seconds``; things per second and ms per call."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < 5:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    per_call = summary_ms(samples)
    return {"per_s": round(items * 1000.0 / per_call["median"], 1), "ms_per_call": per_call, "calls": len(samples)}


def measure(provider: str, embed_batch: int, detect_batch: int, seconds: float) -> dict[str, Any]:
    engine = _engine(provider)
    frame = _portrait_frame()
    faces = engine.detect(frame)
    if len(faces) == 0:
        raise ModelError("the detector found no face in the portrait frame: the models are not working")
    chip = align_faces(frame, faces.landmarks[:1], engine.embedder.template)
    chips = np.ascontiguousarray(np.repeat(chip, embed_batch, axis=0))
    frames = [frame] * detect_batch
    return {"provider": provider,
            "embed": {"batch": embed_batch, **_rate(lambda: engine.embedder.embed(chips), embed_batch, seconds)},
            "detect": {"batch": detect_batch, "frame": f"{FRAME_SIDE}x{FRAME_SIDE}",
                       **_rate(lambda: engine.detector.detect(frames), detect_batch, seconds)},
            "embedder": engine.embedder.name}


def _device() -> str | None:
    """The GPU's name as nvidia-smi reports it (None without one)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or None


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--provider", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--embed-batch", type=int, default=64)
    p.add_argument("--detect-batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="time each measurement about this long")
    args = p.parse_args(argv)
    result = measure(args.provider, args.embed_batch, args.detect_batch, args.seconds)
    emit({"benchmark": "gpu", "device": _device(), "onnxruntime_providers": ort.get_available_providers(),
          **result}, args.json)
    return 0
