"""dlib-layout face chips (150x150) of every face in ../shared/data's deepface, dlib/johns and facenet-pytorch
photos: the real faces the dlib ONNX export is checked and timed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gpu_worker.align import align_faces
from gpu_worker.embed.dlib_resnet import DLIB_150
from gpu_worker.engine import Engine
from shared.images import ImageLimits, read_image

PHOTO_DIRS = ("deepface", "facenet-pytorch")


def real_face_chips(engine: Engine, data_dir: Path, limit: int | None = None) -> np.ndarray:
    """(N, 150, 150, 3) uint8: johns' chips as they are, and every detected face of the other photos aligned."""
    chips = [read_image(p, ImageLimits()) for p in sorted((data_dir / "dlib" / "johns").glob("*/*.jpg"))]
    photos = sorted(p for d in PHOTO_DIRS for p in (data_dir / d).rglob("*.jpg"))
    for photo in photos:
        if limit is not None and len(chips) >= limit:
            break
        image = read_image(photo, ImageLimits())
        faces = engine.detect(image)
        if len(faces):
            chips.extend(align_faces(image, faces.landmarks, DLIB_150))
    out = np.stack([c for c in chips if c.shape == (150, 150, 3)])
    return out if limit is None else out[:limit]
