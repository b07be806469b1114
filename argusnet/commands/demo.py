"""`argusnet demo`: enrol the public domain astronaut portrait shipped with scikit-image and identify her in a
shifted, rescaled copy, with no camera and no data set needed."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from argusnet.commands.common import engine_from
from gpu_worker.engine import Engine
from store import open_store
from store.base import Store
from store.config import LocalStoreConfig, StoreConfig

DEMO_NAME = "Eileen Collins"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="enrol the scikit-image astronaut portrait and identify her in a moved copy")
    p.add_argument("--gallery", type=Path, default=None, metavar="DIR",
                   help="gallery directory to use (default: a temporary one, removed afterwards)")
    p.set_defaults(handler=cmd_demo)


def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def moved_copy(image: np.ndarray, scale: float = 0.7, shift: tuple[int, int] = (90, 40)) -> np.ndarray:
    """The portrait rescaled and shifted over a grey background of the original size."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    canvas = np.full_like(image, 96)
    dy, dx = shift
    canvas[dy:dy + small.shape[0], dx:dx + small.shape[1]] = small[: h - dy, : w - dx]
    return canvas


def enrol_demo_person(engine: Engine, cfg: StoreConfig) -> Store:
    """Open (creating it when missing) the store ``cfg`` and enrol the portrait as DEMO_NAME in it (the caller
    closes it). The face is computed before the store is touched, so a failure leaves no empty gallery."""
    face = engine.enrolment_face(astronaut(), "skimage.data.astronaut()")
    store = open_store(cfg, engine.cfg.gallery, engine.embedder.name, engine.embedder.dim, create=True)
    try:
        store.persons.add_person(DEMO_NAME, [face.sample()])
    except BaseException:
        store.close()
        raise
    return store


def ensure_demo_gallery(engine: Engine, cfg: StoreConfig) -> None:
    """The demo gallery: created with the portrait enrolled on first use, left alone when it has anyone."""
    store = open_store(cfg, engine.cfg.gallery, engine.embedder.name, engine.embedder.dim, create=True)
    with store:
        if store.persons.persons():
            return
    enrol_demo_person(engine, cfg).close()
    print(f"enrolled {DEMO_NAME} (skimage.data.astronaut()) in the demo gallery {store.describe()}", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    engine = engine_from(args)
    with tempfile.TemporaryDirectory(prefix="argusnet-demo-") as tmp:
        directory = args.gallery or Path(tmp) / "gallery"
        with enrol_demo_person(engine, LocalStoreConfig(path=directory)) as store:
            print(f"enrolled {DEMO_NAME} from skimage.data.astronaut() with {engine.embedder.name} "
                  f"(detector on {engine.detector.provider}, embedder on {engine.embedder.provider})")
            probe = moved_copy(astronaut())
            start = time.perf_counter()
            results = engine.identify(probe, store.persons)
            ms = (time.perf_counter() - start) * 1000
    for r in results:
        who = r.identity
        print(f"identified: {who.label}  similarity {who.similarity:.3f}  box "
              f"{[int(v) for v in r.face.box]}  ({ms:.0f} ms for detect+align+embed+search)")
    return 0 if any(r.identity.name == DEMO_NAME for r in results) else 1
