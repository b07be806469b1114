"""A FAISS index of L2-normalised face embeddings keyed by face id: exact inner product, or HNSW when large.

Inner product on unit vectors is cosine similarity. Exact search (`IndexFlatIP`) is the default; once the index
holds more than ``GalleryConfig.hnsw_above`` vectors it is rebuilt as HNSW (`IndexHNSWFlat`, inner product).
Both sit inside `IndexIDMap2`, so ids are the gallery's face ids. HNSW cannot delete in place: removed ids are
kept as tombstones, filtered out of results (searching a little deeper to make up for them), and the graph is
rebuilt without them once they pass a quarter of the index.

An index made with ``grow=False`` stays exact whatever its size: a Redis replica answers with it while it builds the
HNSW graph in the background (`FaceIndex.hnsw_built`, in batches so that the build can be stopped between them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import faiss
import numpy as np

from shared.types import check_array
from store.config import GalleryConfig
from store.types import PersonHit

TOMBSTONE_REBUILD_FRACTION = 0.25
PARALLEL_SEARCH_WORK = 2_000_000  # vectors x queries above which a search uses FAISS's threads
BUILD_BATCH = 10_000  # vectors per FAISS add in a background HNSW build (the add cannot be interrupted)


@dataclass(frozen=True)
class FaceNeighbours:
    """Search result for a batch of Q queries: ``ids`` (Q, k) int64 (-1 = none), ``similarities`` (Q, k)."""

    ids: np.ndarray
    similarities: np.ndarray


def _exact(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _hnsw(dim: int, cfg: GalleryConfig) -> faiss.Index:
    inner = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    inner.hnsw.efConstruction = cfg.hnsw_ef_construction
    inner.hnsw.efSearch = cfg.hnsw_ef_search
    return faiss.IndexIDMap2(inner)


class FaceIndex:
    """Vectors (N, dim) float32 by int64 id. Not thread-safe: the gallery serialises access."""

    def __init__(self, dim: int, cfg: GalleryConfig, grow: bool = True) -> None:
        """``grow``: rebuild as HNSW once above ``cfg.hnsw_above`` (False: stay exact)."""
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        self.dim = dim
        self.cfg = cfg
        self.grow = grow
        self._index = _exact(dim)
        self._tombstones: set[int] = set()

    @classmethod
    def hnsw_built(cls, ids: np.ndarray, vectors: np.ndarray, cfg: GalleryConfig, stop: Callable[[], bool],
                   batch: int = BUILD_BATCH) -> "FaceIndex | None":
        """An HNSW index of ``vectors`` (N, dim) by ``ids``, added ``batch`` at a time; None when ``stop()`` turned
        true between two batches."""
        out = cls(np.shape(vectors)[-1], cfg)
        vectors = out._check(vectors)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (len(vectors),):
            raise ValueError(f"ids: expected shape ({len(vectors)},), got {ids.shape}")
        out._index = _hnsw(out.dim, cfg)
        for start in range(0, len(ids), batch):
            if stop():
                return None
            out._index.add_with_ids(vectors[start:start + batch], ids[start:start + batch])
        return out

    @property
    def kind(self) -> str:
        return "hnsw" if self.is_hnsw else "exact"

    @property
    def is_hnsw(self) -> bool:
        return isinstance(faiss.downcast_index(self._index.index), faiss.IndexHNSWFlat)

    def __len__(self) -> int:
        return int(self._index.ntotal) - len(self._tombstones)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        check_array("embeddings", vectors, (None, self.dim))
        return vectors

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = self._check(vectors)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if ids.shape != (len(vectors),):
            raise ValueError(f"ids: expected shape ({len(vectors)},), got {ids.shape}")
        if self.grow and not self.is_hnsw and len(self) + len(ids) > self.cfg.hnsw_above:
            self._index = self._rebuilt(_hnsw(self.dim, self.cfg), extra=(ids, vectors))
            return
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if not self.is_hnsw:
            self._index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        self._tombstones.update(int(i) for i in ids)
        if len(self._tombstones) > TOMBSTONE_REBUILD_FRACTION * self._index.ntotal:
            self.compact()

    def compact(self) -> None:
        """Rebuild without tombstones (HNSW again only when still above the threshold)."""
        fresh = _hnsw(self.dim, self.cfg) if len(self) > self.cfg.hnsw_above else _exact(self.dim)
        self._index = self._rebuilt(fresh)

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        if len(ids) == 0:
            return ids, np.empty((0, self.dim), np.float32)
        vectors = self._index.index.reconstruct_n(0, len(ids))
        if self._tombstones:
            keep = ~np.isin(ids, np.fromiter(self._tombstones, np.int64))
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors

    def _rebuilt(self, fresh: faiss.Index, extra: tuple[np.ndarray, np.ndarray] | None = None) -> faiss.Index:
        ids, vectors = self._live()
        if extra is not None:
            ids, vectors = np.concatenate([ids, extra[0]]), np.concatenate([vectors, extra[1]])
        if len(ids):
            fresh.add_with_ids(vectors, ids)
        self._tombstones = set()
        return fresh

    def search(self, queries: np.ndarray, k: int) -> FaceNeighbours:
        queries = self._check(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        deep = min(k + len(self._tombstones), int(self._index.ntotal))
        if deep == 0:
            empty = np.full((len(queries), k), -1, np.int64)
            return FaceNeighbours(empty, np.full((len(queries), k), -np.inf, np.float32))
        sims, ids = self._search(queries, deep)
        if self._tombstones:
            dead = np.isin(ids, np.fromiter(self._tombstones, np.int64))
            ids, sims = np.where(dead, -1, ids), np.where(dead, -np.inf, sims)
            order = np.argsort(-sims, axis=1, kind="stable")
            ids, sims = np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1)
        if deep < k:
            pad = k - deep
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
        return FaceNeighbours(ids[:, :k], sims[:, :k])

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Small searches run on one thread: waking FAISS's OpenMP threads costs more than the search itself
        (and they compete with ONNX Runtime's threads on a small CPU)."""
        if int(self._index.ntotal) * len(queries) >= PARALLEL_SEARCH_WORK:
            return self._index.search(queries, k)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._index.search(queries, k)
        finally:
            faiss.omp_set_num_threads(threads)

    def serialize(self) -> bytes:
        """The index without tombstones, as FAISS bytes."""
        if self._tombstones:
            self.compact()
        return faiss.serialize_index(self._index).tobytes()

    @classmethod
    def deserialize(cls, data: bytes, dim: int, cfg: GalleryConfig) -> "FaceIndex":
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        if index.d != dim:
            raise ValueError(f"index file: expected dim {dim}, got {index.d}")
        out = cls(dim, cfg)
        out._index = index
        if out.is_hnsw:
            faiss.downcast_index(index.index).hnsw.efSearch = cfg.hnsw_ef_search
        return out

    def set_ef_search(self, ef: int) -> None:
        """Change HNSW's query-time candidate list (no effect on exact search)."""
        if self.is_hnsw:
            faiss.downcast_index(self._index.index).hnsw.efSearch = ef

    def ids(self) -> np.ndarray:
        return self._live()[0]


def rank_persons(found: FaceNeighbours, owner: Mapping[int, str]) -> list[list[PersonHit]]:
    """Per query, the persons among the neighbours ranked by their best face (each person once); ids without an
    owner (removed meanwhile, or -1 for none) are skipped. Shared by every backend's replica."""
    results: list[list[PersonHit]] = []
    for ids, sims in zip(found.ids, found.similarities):
        best: dict[str, PersonHit] = {}
        for face_id, sim in zip(ids, sims):
            name = owner.get(int(face_id))
            if name is not None and name not in best:
                best[name] = PersonHit(name, float(sim), int(face_id))
        results.append(list(best.values()))
    return results
