"""Helpers shared by the evaluation commands: photo lists, embedding a photo's main face, JSON output."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from gpu_worker.engine import Engine
from shared.errors import ArgusError, InputError
from shared.files import atomic_write
from shared.images import read_image


@dataclass(frozen=True)
class PhotoEmbeddings:
    """Embeddings of the largest face of each photo; ``failed`` lists photos with no usable face."""

    vectors: dict[str, np.ndarray]
    failed: dict[str, str]


def embed_photos(engine: Engine, paths: Iterable[Path], desc: str) -> PhotoEmbeddings:
    vectors: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    unique = sorted({str(p) for p in paths})
    for path in tqdm(unique, desc=desc, unit="photo", disable=None, leave=False):
        try:
            image = read_image(path, engine.cfg.images)
        except ArgusError as exc:
            failed[path] = str(exc)
            continue
        faces = engine.detect(image, pad_retry=True).largest()
        if len(faces) == 0:
            failed[path] = "no face found"
            continue
        vectors[path] = engine.observe(image, faces)[0].embedding
    return PhotoEmbeddings(vectors, failed)


def resolve(images_dir: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else images_dir / path


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    return path


def write_json(result: dict, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
