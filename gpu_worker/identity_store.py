"""One store for every identity a worker can give a track: enrolled persons and provisional visitors.

``IdentityStore`` is the interface the tracked processor uses; ``LocalIdentityStore`` keeps both galleries on
disk (persons in the gallery directory, visitors in its ``visitors/`` sub-directory, both `Gallery`s), so the
`argusnet visitors` commands and every worker process on the machine see the same state. A shared store (Redis)
can implement the same interface to serve workers on several machines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import simplejpeg

from gpu_worker.gallery import DB_FILE, Gallery, PersonHit
from shared.config import GalleryConfig, VisitorConfig
from shared.errors import GalleryExistsError
from shared.files import atomic_write
from shared.ids import ID_RULE, is_valid_id

log = logging.getLogger(__name__)

VISITOR_PREFIX = "visitor"
VISITORS_DIR = "visitors"
CROPS_DIR = "crops"  # best face of every ended track: crops/<camera>/<track>.jpg, kept as long as visitors
REFRESH_S = 2.0  # how often other processes' changes (enrolments, operator actions, expiry) are picked up


@dataclass(frozen=True)
class VisitorMatch:
    visitor: str
    similarity: float


@dataclass(frozen=True)
class FaceSample:
    """One face to keep for an identity: embedding (D,), aligned crop, its landmarks (5, 2), where it came from."""

    embedding: np.ndarray
    crop: np.ndarray
    landmarks: np.ndarray
    source: str


class IdentityStore(Protocol):
    model: str

    def search_persons(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]: ...

    def match_visitor(self, embedding: np.ndarray, threshold: float) -> VisitorMatch | None: ...

    def new_visitor(self, faces: Sequence[FaceSample]) -> str: ...

    def add_to_visitor(self, visitor: str, faces: Sequence[FaceSample]) -> None: ...

    def rejections(self) -> dict[str, frozenset[str]]: ...

    def save_crop(self, camera: str, track: int, crop: np.ndarray) -> Path: ...

    def refresh(self, now: float) -> None: ...


def visitors_dir(gallery_dir: Path) -> Path:
    return Path(gallery_dir) / VISITORS_DIR


def open_visitors(gallery_dir: Path, model: str, dim: int, cfg: GalleryConfig) -> Gallery:
    """The visitor gallery beside a person gallery, created empty on first use."""
    directory = visitors_dir(gallery_dir)
    if not (directory / DB_FILE).is_file():
        try:
            return Gallery.create(directory, model, dim, cfg)
        except GalleryExistsError:
            log.info("visitor gallery %s was created by another process at the same moment: opening it", directory)
    return Gallery.open(directory, cfg)


class LocalIdentityStore:
    """Persons and visitors as two on-disk galleries; visitors expire after ``retention_h`` without a sighting."""

    def __init__(self, persons: Gallery, visitors: Gallery, cfg: VisitorConfig) -> None:
        if visitors.model != persons.model:
            raise ValueError(f"visitor gallery model {visitors.model} differs from the person gallery's "
                             f"{persons.model}")
        self.persons = persons
        self.visitors = visitors
        self.cfg = cfg
        self.model = persons.model
        self._rejections = visitors.rejections()
        self._next_refresh = 0.0

    def search_persons(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        return self.persons.search(embeddings, k)

    def match_visitor(self, embedding: np.ndarray, threshold: float) -> VisitorMatch | None:
        if self.visitors.face_count == 0:
            return None
        hits = self.visitors.search(embedding[None], 4)[0]
        if not hits or hits[0].similarity < threshold:
            return None
        return VisitorMatch(hits[0].name, hits[0].similarity)

    def _add(self, name: str, faces: Sequence[FaceSample]) -> None:
        self.visitors.add_person(name, np.stack([f.embedding for f in faces]), [f.crop for f in faces],
                                 np.stack([f.landmarks for f in faces]), [f.source for f in faces])

    def new_visitor(self, faces: Sequence[FaceSample]) -> str:
        name = self.visitors.allocate_name(VISITOR_PREFIX)
        self._add(name, faces[: self.cfg.max_faces])
        return name

    def add_to_visitor(self, visitor: str, faces: Sequence[FaceSample]) -> None:
        """Mark a visitor seen now and add faces, keeping at most ``max_faces`` in all."""
        self.visitors.touch(visitor, time.time())
        have = next((p.faces for p in self.visitors.persons() if p.name == visitor), 0)
        room = self.cfg.max_faces - have
        if room > 0 and faces:
            self._add(visitor, faces[:room])

    def rejections(self) -> dict[str, frozenset[str]]:
        return self._rejections

    def save_crop(self, camera: str, track: int, crop: np.ndarray) -> Path:
        """Store a track's best face as ``crops/<camera>/<track>.jpg`` beside the gallery (written atomically)."""
        if not is_valid_id(camera):  # the id names a folder: never '..' or a path (the protocol checks it too)
            raise ValueError(f"camera id must be {ID_RULE}, got {camera!r}")
        folder = self.persons.directory / CROPS_DIR / camera
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{track}.jpg"
        atomic_write(path, simplejpeg.encode_jpeg(np.ascontiguousarray(crop), quality=90, colorspace="RGB"))
        return path

    def _expire_crops(self, older_than: float) -> int:
        removed = 0
        for path in (self.persons.directory / CROPS_DIR).glob("*/*.jpg"):
            try:
                modified = path.stat().st_mtime
            except FileNotFoundError:  # another worker sharing this gallery expired it since the listing
                continue
            if modified < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def refresh(self, now: float) -> None:
        """At most every REFRESH_S: reload galleries changed by other processes, forget expired visitors and
        delete track crops older than the same retention."""
        if now < self._next_refresh:
            return
        self._next_refresh = now + REFRESH_S
        self.persons.refresh()
        self.visitors.refresh()
        cutoff = time.time() - self.cfg.retention_h * 3600.0
        gone = self.visitors.expire(older_than=cutoff)
        if gone:
            log.info("forgot %d visitor(s) not seen for %.1f h", len(gone), self.cfg.retention_h)
        self._expire_crops(cutoff)
        self._rejections = self.visitors.rejections()


def name_visitor(persons: Gallery, visitors: Gallery, visitor: str, name: str) -> int:
    """An operator names a visitor: their faces move to the person gallery as ``name``; returns how many."""
    faces = visitors.faces_of(visitor)
    persons.add_person(name, np.stack([f.embedding for f in faces]), [f.crop for f in faces],
                       np.stack([f.landmarks for f in faces]), [f.source for f in faces], model=visitors.model)
    visitors.remove_person(visitor, missing_ok=True)  # a worker may have expired it meanwhile: named all the same
    return len(faces)
