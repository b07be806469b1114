"""The Redis visitor store: provisional identities in a second gallery (keys ``PREFIX:visitors:...``). Every
write holds the gallery's lock, so ``match_or_create`` is atomic across processes and hosts."""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from store.redis.gallery import RedisGallery
from store.types import VISITOR_PREFIX, FaceSample, StoredFace, VisitorInfo, VisitorMatch


class RedisVisitorStore:
    def __init__(self, gallery: RedisGallery) -> None:
        self.gallery = gallery

    @property
    def model(self) -> str:
        return self.gallery.model

    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, max_faces: int) -> VisitorMatch:
        return self.gallery.match_or_create(faces, threshold, VISITOR_PREFIX, max_faces)

    def seen(self, visitor: str, faces: Sequence[FaceSample], max_faces: int, when: float | None = None) -> None:
        self.gallery.seen(visitor, faces, max_faces, time.time() if when is None else when)

    def reject(self, visitor: str, not_name: str) -> None:
        self.gallery.reject(visitor, not_name)

    def rejections(self) -> dict[str, frozenset[str]]:
        return self.gallery.rejections()

    def faces_of(self, visitor: str) -> list[StoredFace]:
        return self.gallery.faces_of(visitor)

    def all_faces(self) -> list[StoredFace]:
        return self.gallery.all_faces()

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        self.gallery.replace_embeddings(model, dim, embeddings)

    def list(self) -> list[VisitorInfo]:
        rejected = self.gallery.rejections()
        return [VisitorInfo(p.name, p.faces, p.created, p.last_seen, tuple(sorted(rejected.get(p.name, ()))))
                for p in self.gallery.persons()]

    def merge(self, visitor: str, person: str) -> int:
        return self.gallery.record_merge(visitor, person)

    def merged_into(self, visitor: str) -> str | None:
        return self.gallery.merged_into(visitor)

    def expire(self, older_than: float) -> list[str]:
        return self.gallery.expire(older_than)

    def sync(self) -> bool:
        return self.gallery.sync()

    def close(self) -> None:
        self.gallery.close()
