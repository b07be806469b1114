"""Embedder benchmark: dlib's ResNet exported to ONNX (the default backend) against dlib's own C++ (dlib-bin), same
chips, same run: ms per face at batch 1 (median) and batch 32, and the lowest cosine between the two descriptors
over every real face in ../shared/data.

Run: argusnet bench embed --json out/bench-embed.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from argusnet.config import load_config
from bench.common import emit, parser, summary_ms, timings_ms
from evaluation.chips import real_face_chips
from gpu_worker.embed.dlib_onnx import DlibOnnxEmbedder
from gpu_worker.embed.dlib_resnet import DlibEmbedder
from gpu_worker.engine import Engine

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--faces", type=int, default=None, help="use at most this many faces (default: all)")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args(argv)
    cfg = load_config()
    chips = real_face_chips(Engine(cfg), DATA, args.faces)
    fast, reference = DlibOnnxEmbedder(cfg.runtime), DlibEmbedder()
    batch = np.resize(chips, (32, *chips.shape[1:]))
    one = summary_ms(timings_ms(lambda: fast.raw(chips[:1]), args.repeats))
    b32 = summary_ms(timings_ms(lambda: fast.raw(batch), max(5, args.repeats // 5)))
    ref_one = summary_ms(timings_ms(lambda: reference.raw(chips[:1]), max(5, args.repeats // 3)))
    cos = cosine(fast.raw(chips), reference.raw(chips))
    result = {"benchmark": "embed", "model": fast.name, "provider": fast.provider, "faces": len(chips),
              "ms_per_face": one["median"], "ms_per_face_batch32": round(b32["median"] / 32, 3),
              "reference_ms_per_face": ref_one["median"], "speedup": round(ref_one["median"] / one["median"], 2),
              "reference_cosine_min": round(float(cos.min()), 7),
              "reference_cosine_mean": round(float(cos.mean()), 7),
              "targets": {"ms_per_face_max": 15.0, "speedup_min": 5.0, "reference_cosine_min": 0.9999}}
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
