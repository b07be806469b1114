"""Gallery search benchmark: HNSW against exact search on a synthetic face-like gallery (default 1M x 128).

The gallery is built the way real ones look: identities (random unit centres) with several faces each (centre +
noise, cosine about 0.93 to the centre, like dlib's descriptors of one person). Queries are fresh faces of
enrolled identities. Exact search (`IndexFlatIP`, the gallery's default below ``hnsw_above``) is the baseline and
the ground truth; HNSW runs with the gallery's own settings (`GalleryConfig`) through `store.face_index`.
recall@1 = share of queries whose HNSW top-1 face is the exact top-1 face. Latency is one query at a time.

Run: argusnet bench search --json out/bench-search.json [--size 1000000]
"""

from __future__ import annotations

import time
from typing import Sequence

import faiss
import numpy as np

from bench.common import emit, parser, summary_ms
from store.config import GalleryConfig
from store.face_index import FaceIndex

FACES_PER_ID = 4
NOISE = 0.035  # per-dimension sigma: cos(face, centre) ~ 0.93 at 128 dims


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(size: int, queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((size // FACES_PER_ID + 1, dim), dtype=np.float32))
    owners = np.arange(size) // FACES_PER_ID
    gallery = np.empty((size, dim), np.float32)
    for start in range(0, size, 200_000):  # chunks keep peak memory low
        end = min(size, start + 200_000)
        gallery[start:end] = unit(centres[owners[start:end]]
                                  + NOISE * rng.standard_normal((end - start, dim), dtype=np.float32))
    picked = rng.integers(0, size // FACES_PER_ID, queries)
    probes = unit(centres[picked] + NOISE * rng.standard_normal((queries, dim), dtype=np.float32))
    return gallery, probes


def one_at_a_time(index: FaceIndex, probes: np.ndarray) -> tuple[np.ndarray, list[float]]:
    top, times = np.empty(len(probes), np.int64), []
    for i in range(len(probes)):
        t0 = time.perf_counter()
        found = index.search(probes[i:i + 1], 1)
        times.append((time.perf_counter() - t0) * 1000.0)
        top[i] = found.ids[0, 0]
    return top, times


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1_000_000, help="gallery faces (default 1,000,000)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--ef-search", default="32,64,128,256",
                   help="comma-separated HNSW efSearch values to sweep on the same index (the headline numbers are "
                   "those of GalleryConfig's default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    gallery, probes = synthetic(args.size, args.queries, args.dim, args.seed)
    ids = np.arange(args.size, dtype=np.int64)
    exact = FaceIndex(args.dim, GalleryConfig(hnsw_above=args.size + 1))
    exact.add(ids, gallery)
    truth, exact_ms = one_at_a_time(exact, probes[: min(200, args.queries)])
    truth_all = exact.search(probes, 1).ids[:, 0]  # batched: same answers, faster

    default_ef = GalleryConfig().hnsw_ef_search
    sweep = sorted({int(v) for v in args.ef_search.split(",")} | {default_ef})
    cfg = GalleryConfig(hnsw_above=1)
    hnsw = FaceIndex(args.dim, cfg)
    t0 = time.perf_counter()
    hnsw.add(ids, gallery)
    build_s = time.perf_counter() - t0
    runs = {}
    for ef in sweep:
        hnsw.set_ef_search(ef)
        top, hnsw_ms = one_at_a_time(hnsw, probes)
        runs[ef] = {"ef_search": ef, "ms_per_query": summary_ms(hnsw_ms),
                    "recall_at_1": round(float(np.mean(top == truth_all)), 4),
                    "same_person_at_1": round(float(np.mean(top // FACES_PER_ID == truth_all // FACES_PER_ID)), 4)}
    exact_median = summary_ms(exact_ms)["median"]
    headline = runs[default_ef]
    result = {
        "benchmark": "search", "size": args.size, "dim": args.dim, "queries": args.queries,
        "hnsw": {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction, "build_s": round(build_s, 1),
                 "sweep": list(runs.values())},
        "exact": {"ms_per_query": summary_ms(exact_ms)},
        "ef_search": default_ef,
        "ms_per_query": headline["ms_per_query"]["median"],
        "recall_at_1": headline["recall_at_1"],
        "speedup_vs_exact": round(exact_median / headline["ms_per_query"]["median"], 1),
        "threads": faiss.omp_get_max_threads(),
        "targets": {"ms_per_query_max": 1.0, "recall_at_1_min": 0.99},
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
