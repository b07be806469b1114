"""Encryption at rest: what store.encryption_key_file costs on the local and Redis backends, with and without a key.

- enrol: one ``add_person`` of ``--enrol-faces`` faces (default 1,000; 150x150 crops), median of ``--repeats``
  fresh stores.
- cold start from ``--cold-faces`` faces (default 10,000 x 128): ``open_store`` up to its first answered search,
  from the index file (decrypted when keyed) and with the index file deleted (rebuilt from SQLite: every embedding
  decrypted); median of ``--repeats`` opens.

- Redis (a redis-server this benchmark starts on a free loopback port): the same enrolment into a fresh prefix,
  and a replica's cold start from ``--cold-faces`` faces: ``open_store`` (snapshot: every embedding read and,
  when keyed, decrypted) up to its first answered search.

Run: argusnet bench encryption --json out/bench-encryption.json
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.common import emit, parser, summary_ms
from bench.store import start_redis
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig
from store.local.gallery import INDEX_FILE
from store.types import FaceSample

DIM = 128
BATCH = 100


def _faces(rng: np.random.Generator, n: int) -> list[FaceSample]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ramp = np.linspace(0, 255, 150, dtype=np.float32)  # a smooth crop: JPEG size near a real face's
    crop = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=2).astype(np.uint8)
    landmarks = np.arange(10, dtype=np.float32).reshape(5, 2)
    return [FaceSample(v, crop, landmarks, "bench.jpg") for v in vectors]


def _cfg(directory: Path, key: Path | None) -> LocalStoreConfig:
    return LocalStoreConfig(path=directory, encryption_key_file=key)


def _enrol_ms(root: Path, key: Path | None, faces: Sequence[FaceSample], repeats: int) -> dict[str, float]:
    samples = []
    for run in range(repeats):
        with open_store(_cfg(root / f"enrol-{run}", key), GalleryConfig(), "bench", DIM, create=True) as store:
            t0 = time.perf_counter()
            store.persons.add_person("person", faces)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return summary_ms(samples)


def _cold_ms(directory: Path, key: Path | None, query: np.ndarray, repeats: int,
             rebuild: bool) -> dict[str, float]:
    samples = []
    for _ in range(repeats):
        if rebuild:
            (directory / INDEX_FILE).unlink(missing_ok=True)
        t0 = time.perf_counter()
        with open_store(_cfg(directory, key), GalleryConfig(), "bench", DIM) as store:
            store.persons.search(query, 1)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return summary_ms(samples)


def _one(root: Path, key: Path | None, enrol: Sequence[FaceSample], cold: Sequence[FaceSample],
         repeats: int) -> dict[str, Any]:
    directory = root / "cold"
    with open_store(_cfg(directory, key), GalleryConfig(), "bench", DIM, create=True) as store:
        for start in range(0, len(cold), BATCH):
            store.persons.add_person(f"p{start // BATCH}", cold[start:start + BATCH])
    query = np.asarray(cold[0].embedding)[None, :]
    return {"enrol_ms": _enrol_ms(root, key, enrol, repeats),
            "cold_start_index_file_ms": _cold_ms(directory, key, query, repeats, rebuild=False),
            "cold_start_rebuild_ms": _cold_ms(directory, key, query, repeats, rebuild=True),
            "gallery_sqlite_bytes": (directory / "gallery.sqlite").stat().st_size}


def _redis_cfg(url: str, prefix: str, key: Path | None) -> RedisStoreConfig:
    return RedisStoreConfig(url=url, prefix=prefix, encryption_key_file=key, socket_timeout_s=120.0)


def _redis_one(url: str, label: str, key: Path | None, enrol: Sequence[FaceSample], cold: Sequence[FaceSample],
               repeats: int) -> dict[str, Any]:
    enrol_samples = []
    for run in range(repeats):
        with open_store(_redis_cfg(url, f"{label}-enrol-{run}", key), GalleryConfig(), "bench", DIM,
                        create=True) as store:
            t0 = time.perf_counter()
            store.persons.add_person("person", enrol)
            enrol_samples.append((time.perf_counter() - t0) * 1000.0)
    cfg = _redis_cfg(url, f"{label}-cold", key)
    with open_store(cfg, GalleryConfig(), "bench", DIM, create=True) as store:
        for start in range(0, len(cold), BATCH):
            store.persons.add_person(f"p{start // BATCH}", cold[start:start + BATCH])
    query = np.asarray(cold[0].embedding)[None, :]
    cold_samples = []
    for run in range(repeats + 1):  # the first open warms Redis and the process up: not counted
        t0 = time.perf_counter()
        with open_store(cfg, GalleryConfig(), "bench", DIM) as store:
            store.persons.search(query, 1)
        if run:
            cold_samples.append((time.perf_counter() - t0) * 1000.0)
    return {"enrol_ms": summary_ms(enrol_samples), "cold_start_ms": summary_ms(cold_samples)}


def _redis_results(key: Path, enrol: Sequence[FaceSample], cold: Sequence[FaceSample],
                   repeats: int) -> dict[str, Any]:
    server = start_redis()
    try:
        results = {"plain": _redis_one(server.url, "plain", None, enrol, cold, repeats),
                   "encrypted": _redis_one(server.url, "encrypted", key, enrol, cold, repeats)}
    finally:
        server.stop()
    results["encrypted_over_plain"] = {
        name: round(results["encrypted"][name]["median"] / results["plain"][name]["median"], 3)
        for name in ("enrol_ms", "cold_start_ms")}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--enrol-faces", type=int, default=1000)
    p.add_argument("--cold-faces", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-redis", action="store_true", help="measure the local backend only")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    enrol, cold = _faces(rng, args.enrol_faces), _faces(rng, args.cold_faces)
    with tempfile.TemporaryDirectory(prefix="argusnet-bench-enc-") as tmp:
        root = Path(tmp)
        key = root / "key"
        key.write_text(secrets.token_hex(32) + "\n")
        results = {"plain": _one(root / "plain", None, enrol, cold, args.repeats),
                   "encrypted": _one(root / "encrypted", key, enrol, cold, args.repeats)}
        redis_side = None if args.no_redis else _redis_results(key, enrol, cold, args.repeats)
    ratios = {name: round(results["encrypted"][name]["median"] / results["plain"][name]["median"], 3)
              for name in ("enrol_ms", "cold_start_index_file_ms", "cold_start_rebuild_ms")}
    emit({"benchmark": "encryption", "enrol_faces": args.enrol_faces, "cold_faces": args.cold_faces,
          "results": results, "encrypted_over_plain": ratios, "redis": redis_side}, args.json)
    return 0
