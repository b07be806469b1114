"""The negative evidence store over a gallery, the same for every backend: each backend's gallery
(`store.local.gallery.Gallery`, `store.redis.gallery.RedisGallery`) keeps the faces, under the name of the person
they are NOT, and this class maps the `NegativeStore` interface onto it.

When an operator says "not this person" about a track that was named NAME, the track's faces are kept here under
NAME; a worker then declines to name a face NAME when it is nearer to NAME's negative faces than to NAME's own.
The gallery is a third one beside the persons and the visitors (local ``negatives/``, Redis ``P:negatives:...``),
on the persons' embedder: `argusnet gallery reembed` re-embeds it, `argusnet store rekey` re-seals it,
`argusnet store migrate` copies it, and erasing a person (`identity.erasure`, `identity.merges.remove_person`) erases
their negative evidence too.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from shared.errors import GalleryError
from store.types import FaceSample, PersonHit, PersonInfo, StoredFace, is_visitor_name


class NegativeGallery(Protocol):
    """What a backend's gallery offers for negative evidence."""

    model: str
    dim: int

    def add_person(self, name: str, faces: Sequence[FaceSample]) -> list[int]: ...

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]: ...

    def faces_of(self, name: str, missing_ok: bool = False) -> list[StoredFace]: ...

    def remove_face(self, name: str, face_id: int) -> bool: ...

    def remove_person(self, name: str, missing_ok: bool = False) -> int: ...

    def persons(self) -> list[PersonInfo]: ...

    def all_faces(self) -> list[StoredFace]: ...

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None: ...

    @property
    def face_count(self) -> int: ...

    def sync(self) -> bool: ...

    def close(self) -> None: ...


def check_person(person: str) -> str:
    """The name negative evidence is kept under (stripped); GalleryError for an empty name or a visitor id."""
    name = person.strip()
    if not name:
        raise GalleryError("negative evidence needs a person's name, got an empty one")
    if is_visitor_name(name):
        raise GalleryError(f"negative evidence is kept for enrolled persons, not for a visitor id ({name!r})")
    return name


class GalleryNegativeStore:
    """`store.base.NegativeStore` over one gallery (``gallery``: the backend's, owned and closed by this)."""

    def __init__(self, gallery: NegativeGallery) -> None:
        self.gallery = gallery

    @property
    def model(self) -> str:
        return self.gallery.model

    @property
    def dim(self) -> int:
        return self.gallery.dim

    @property
    def face_count(self) -> int:
        return self.gallery.face_count

    def add(self, person: str, faces: Sequence[FaceSample]) -> list[int]:
        name = check_person(person)
        if not faces:
            raise GalleryError(f"no faces given as negative evidence for {name!r}")
        return self.gallery.add_person(name, faces)

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        return self.gallery.search(embeddings, k)

    def faces_of(self, person: str) -> list[StoredFace]:
        return self.gallery.faces_of(person, missing_ok=True)

    def remove_face(self, person: str, face_id: int) -> bool:
        return self.gallery.remove_face(person, face_id)

    def erase(self, person: str) -> int:
        return self.gallery.remove_person(person, missing_ok=True)

    def counts(self) -> dict[str, int]:
        return {p.name: p.faces for p in self.gallery.persons() if p.faces > 0}

    def all_faces(self) -> list[StoredFace]:
        return self.gallery.all_faces()

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        self.gallery.replace_embeddings(model, dim, embeddings)

    def sync(self) -> bool:
        return self.gallery.sync()

    def close(self) -> None:
        self.gallery.close()
