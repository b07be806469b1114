"""`argusnet gallery export`: a JSON description of a gallery (model, dim, each person with their faces' sources
and embeddings), the same for every backend."""

from __future__ import annotations

import json
from pathlib import Path

from shared.files import atomic_write
from store.base import PersonGallery

EXPORT_FORMAT = "argusnet-gallery"
EXPORT_VERSION = 1


def export_gallery(gallery: PersonGallery, path: Path) -> None:
    persons: dict[str, dict] = {p.name: {"name": p.name, "created": p.created, "faces": []}
                                for p in gallery.persons()}
    for face in gallery.all_faces():
        persons[face.person]["faces"].append({"id": face.face_id, "source": face.source, "created": face.created,
                                              "embedding": [round(float(v), 7) for v in face.embedding]})
    document = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model": gallery.model, "dim": gallery.dim,
                "persons": list(persons.values())}
    atomic_write(Path(path), json.dumps(document, indent=1).encode(), durable=True)
