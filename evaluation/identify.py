"""`argusnet eval identify`: closed-set rank-1 identification, leave-one-out over labelled photos."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from evaluation.common import embed_photos, require_file, resolve
from gpu_worker.engine import Engine
from identity.decision import decide_name
from shared.errors import InputError

PROTOCOL = ("leave-one-out: each photo in turn is the probe against a gallery of all other photos; a person's "
            "similarity is their best photo's; probes whose identity has no other photo are not counted")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def read_identities(source: Path, images_dir: Path | None) -> list[tuple[str, Path]]:
    """(identity, photo) from a CSV ``identity,file`` or from a folder with one sub-folder per person."""
    if source.is_dir():
        rows = [(person.name, photo) for person in sorted(p for p in source.iterdir() if p.is_dir())
                for photo in sorted(person.iterdir()) if photo.suffix.lower() in IMAGE_SUFFIXES]
    else:
        require_file(source, "identities CSV")
        base = images_dir or source.parent
        with source.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not {"identity", "file"} <= set(reader.fieldnames or []):
                raise InputError(f"{source}: expected columns identity,file, got {reader.fieldnames}")
            rows = [(row["identity"].strip(), resolve(base, row["file"].strip())) for row in reader]
    if not rows:
        raise InputError(f"{source}: no labelled photos found")
    return rows


def run_identify(engine: Engine, source: Path, images_dir: Path | None = None) -> dict:
    rows = read_identities(source, images_dir)
    photos = embed_photos(engine, [p for _, p in rows], "identify")
    kept = [(who, str(p)) for who, p in rows if str(p) in photos.vectors]
    people = np.array([who for who, _ in kept])
    vectors = np.stack([photos.vectors[p] for _, p in kept]) if kept else np.zeros((0, 1), np.float32)
    sims = vectors @ vectors.T
    correct = probes = 0
    open_set = {"correct": 0, "unknown": 0, "wrong": 0}
    for i, who in enumerate(people):
        others = np.arange(len(people)) != i
        if not np.any(people[others] == who):
            continue
        ranked = rank_persons(people[others], sims[i, others])
        probes += 1
        correct += ranked[0].name == who
        identity = decide_name(ranked, engine.rule)
        open_set["unknown" if identity.name is None else "correct" if identity.name == who else "wrong"] += 1
    return {
        "identities": len(set(who for who, _ in rows)), "photos": len(rows), "probes": probes,
        "rank1": correct / probes if probes else float("nan"), "protocol": PROTOCOL,
        "failed_detections": len(photos.failed), "failed_photos": sorted(photos.failed),
        "open_set": open_set, "threshold": engine.rule.threshold, "margin": engine.rule.margin, "model": engine.embedder.name,
    }


class Ranked:
    __slots__ = ("name", "similarity")

    def __init__(self, name: str, similarity: float) -> None:
        self.name, self.similarity = name, similarity


def rank_persons(names: np.ndarray, sims: np.ndarray) -> list[Ranked]:
    """Persons ranked by their best face's similarity (each once, best first)."""
    best: dict[str, float] = {}
    for name, sim in zip(names, sims):
        best[name] = max(best.get(name, -2.0), float(sim))
    return [Ranked(n, s) for n, s in sorted(best.items(), key=lambda kv: -kv[1])]
