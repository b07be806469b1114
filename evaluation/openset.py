"""`argusnet eval openset`: does the system name strangers? Video (`evaluation.openset_video`: real footage
replayed as cameras send it, each identity enrolled alone) and photos (`evaluation.openset_photos`: the 1:N
open-set protocol), with the worker's own code, offline.

Each ``variant`` (site configuration values on top of the configuration) runs the whole evaluation again in the
same run, on the same frames and the same model outputs (`evaluation.replay` keeps them), so that alternatives are
compared side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from evaluation.identify import read_identities
from evaluation.openset_photos import run_photos
from evaluation.openset_video import Camera, Gallery, mated_run, run_strangers
from evaluation.replay import Clip, MemoDetector, MemoEmbedder
from gpu_worker.engine import Engine
from shared.errors import ArgusError
from shared.images import read_image

log = logging.getLogger(__name__)
DEMO_NAME = "Eileen Collins"


@dataclass(frozen=True)
class OpenSetPlan:
    identities: list[Path]
    clips: list[Path]
    resolutions: list[int]
    fps: float
    loops: int
    mated: int = 0  # persons of each clip enrolled from one face (0: no mated part)
    mated_resolutions: tuple[int, ...] = (720, 1080)
    photos: bool = True
    video: bool = True
    variants: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def demo_gallery(engine: Engine) -> Gallery:
    from skimage import data

    face = engine.enrolment_face(np.ascontiguousarray(data.astronaut()), "skimage.data.astronaut()")
    return Gallery(DEMO_NAME, "skimage.data.astronaut()", (face.sample(),))


def identity_galleries(engine: Engine, sources: list[Path]) -> list[Gallery]:
    """Each identity of each source with the photos that pass the enrolment gate (one gallery each)."""
    out = []
    for source in sources:
        photos: dict[str, list] = {}
        for who, photo in read_identities(source, None):
            try:
                face = engine.enrolment_face(read_image(photo, engine.cfg.images), str(photo))
            except ArgusError as exc:
                log.info("not enrolled: %s (%s)", photo, exc)
                continue
            photos.setdefault(who, []).append(face.sample())
        out += [Gallery(who, str(source), tuple(faces)) for who, faces in sorted(photos.items())]
    return out


def evaluate(engine: Engine, plan: OpenSetPlan, galleries: list[Gallery], clips: list[Clip]) -> dict:
    """One configuration: video strangers, mated video, photos."""
    cameras = [Camera(clip, height) for clip in clips for height in plan.resolutions]
    steps = (len(galleries) if plan.video else 0) + plan.mated * len(clips) * len(plan.mated_resolutions)
    out: dict = {"threshold": engine.rule.threshold, "name_threshold": engine.rule.naming.threshold,
                 "margin": engine.rule.margin}
    with tqdm(total=steps, desc="openset", unit="run", disable=None, leave=False) as bar:
        if plan.video:
            out["video"] = run_strangers(engine, galleries, cameras, plan.fps, plan.loops, bar.update)
        if plan.mated:
            runs = [mated_run(engine, Camera(clip, height), plan.fps, plan.loops, plan.mated,
                              engine.cfg.visitors.min_face_px, bar.update)
                    for clip in clips for height in plan.mated_resolutions]
            out["mated"] = {key: sum(r[key] for r in runs) for key in ("later_loops", "loops_named", "tracks_named",
                                                                        "wrong")}
            out["mated"]["runs"] = runs
    if plan.photos:
        out["photos"] = run_photos(engine, plan.identities)
    return out


def run_openset(engine: Engine, plan: OpenSetPlan, engine_for) -> dict:
    """The evaluation under the configuration, then under each variant (``engine_for(overrides)`` builds that
    variant's engine; every engine shares this one's models through their memories)."""
    detector, embedder = MemoDetector(engine.detector), MemoEmbedder(engine.embedder)
    base = Engine(engine.cfg, detector, embedder)
    clips = [Clip(path) for path in plan.clips] if plan.video or plan.mated else []
    galleries = ([demo_gallery(base)] + identity_galleries(base, plan.identities)) if plan.video else []
    result = evaluate(base, plan, galleries, clips)
    result.update({
        "model": engine.embedder.name, "clips": [str(c) for c in plan.clips], "resolutions": plan.resolutions,
        "fps": plan.fps, "loops": plan.loops, "identities": [str(p) for p in plan.identities],
        "variants": [],
    })
    for text, overrides in plan.variants:
        variant = Engine(engine_for(overrides), detector, embedder)
        result["variants"].append({"variant": text, **evaluate(variant, plan, galleries, clips)})
    return result
