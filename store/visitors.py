"""The visitor store over a gallery of provisional identities, the same for every backend: each backend's gallery
(`store.local.gallery.Gallery`, `store.redis.gallery.RedisGallery`) provides the atomic operations, this class maps
the `VisitorStore` interface onto them."""

from __future__ import annotations

import time
from typing import Protocol, Sequence

import numpy as np

from store.types import (
    VISITOR_PREFIX,
    ErasedReferences,
    FaceSample,
    MergeUndo,
    PersonHit,
    PersonInfo,
    StoredFace,
    TrackRef,
    VisitorInfo,
    VisitorMatch,
)


class VisitorGallery(Protocol):
    """What a backend's gallery offers for visitors (besides the PersonGallery operations)."""

    model: str

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]: ...

    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, prefix: str,
                        max_faces: int) -> VisitorMatch: ...

    def seen(self, name: str, faces: Sequence[FaceSample], max_faces: int, when: float) -> None: ...

    def reject(self, name: str, not_name: str) -> None: ...

    def rejections(self) -> dict[str, frozenset[str]]: ...

    def faces_of(self, name: str) -> list[StoredFace]: ...

    def all_faces(self) -> list[StoredFace]: ...

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None: ...

    def persons(self) -> list[PersonInfo]: ...

    def record_merge(self, name: str, into: str, person_faces: Sequence[int] = (),
                     live_tracks: Sequence[TrackRef] = ()) -> int:
        """``name`` is ``into`` from now on; its faces are kept aside with what an unmerge needs."""
        ...

    def merged_into(self, name: str) -> str | None: ...

    def merge_undo(self, name: str) -> MergeUndo | None: ...

    def restore_merged(self, name: str) -> int:
        """Undo ``record_merge``: the kept faces back under ``name``, the merge record gone; how many faces."""
        ...

    def expire_merges(self, older_than: float) -> int:
        """Delete the faces kept by merges made before ``older_than``; how many faces."""
        ...

    def erase_merges(self, name: str) -> int:
        """Delete what the merges into or from ``name`` kept (faces and undo records); how many faces."""
        ...

    def expire(self, older_than: float) -> list[str]: ...

    def remove_person(self, name: str, missing_ok: bool = False) -> int: ...

    def erase_references(self, name: str) -> tuple[int, int]:
        """Delete the rejections naming ``name`` and the merges into or from it; (rejections, merges)."""
        ...

    def sync(self) -> bool: ...

    def close(self) -> None: ...


class GalleryVisitorStore:
    def __init__(self, gallery: VisitorGallery) -> None:
        self.gallery = gallery

    @property
    def model(self) -> str:
        return self.gallery.model

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        return self.gallery.search(embeddings, k)

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

    def merge(self, visitor: str, person: str, person_faces: Sequence[int] = (),
              live_tracks: Sequence[TrackRef] = ()) -> int:
        return self.gallery.record_merge(visitor, person, person_faces, live_tracks)

    def merged_into(self, visitor: str) -> str | None:
        return self.gallery.merged_into(visitor)

    def merge_undo(self, visitor: str) -> MergeUndo | None:
        return self.gallery.merge_undo(visitor)

    def unmerge(self, visitor: str) -> int:
        return self.gallery.restore_merged(visitor)

    def expire(self, older_than: float) -> list[str]:
        gone = self.gallery.expire(older_than)
        self.gallery.expire_merges(older_than)
        return gone

    def remove(self, visitor: str) -> int:
        return self.gallery.remove_person(visitor, missing_ok=True)

    def erase_references(self, name: str) -> ErasedReferences:
        merged_faces = self.gallery.erase_merges(name)
        rejections, merges = self.gallery.erase_references(name)
        return ErasedReferences(rejections, merges, merged_faces=merged_faces)

    def sync(self) -> bool:
        return self.gallery.sync()

    def close(self) -> None:
        self.gallery.close()
