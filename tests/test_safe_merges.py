"""Safe merges, through the worker's own frame processor with the real models: a track that switches people (a
stranger, who becomes a visitor, then an enrolled person in the same place: what a tracker switch looks like) does
not merge the visitor into that person; the visitor keeps its faces and its events."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from argusnet.config import load_config
from evaluation.identify import read_identities
from gpu_worker.engine import Engine
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackedProcessor
from gpu_worker.video import NullTimer
from shared.images import read_image
from store import open_store
from store.config import LocalStoreConfig
from store.types import EventQuery
from tests.conftest import require_data

pytestmark = pytest.mark.slow
SIDE = 220  # the pasted head's side in px
FRAME = (480, 640, 3)
SETTINGS = {"tracking": {"scheduler": {"refresh_s": 0.3}, "distant": {"fine_every_s": 0, "regions": 0}}}


def head(engine: Engine, path) -> np.ndarray:
    """The photo's face with a margin, as a SIDE x SIDE square."""
    image = read_image(path, engine.cfg.images)
    x1, y1, x2, y2 = engine.detect(image, pad_retry=True).largest().boxes[0]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) * 0.9
    h, w = image.shape[:2]
    box = [int(max(0, cx - half)), int(max(0, cy - half)), int(min(w, cx + half)), int(min(h, cy + half))]
    return cv2.resize(image[box[1]:box[3], box[0]:box[2]], (SIDE, SIDE), interpolation=cv2.INTER_AREA)


def frame_with(face: np.ndarray) -> np.ndarray:
    canvas = np.full(FRAME, 110, np.uint8)
    canvas[120:120 + SIDE, 210:210 + SIDE] = face
    return canvas


def test_a_track_that_switches_from_a_visitor_to_a_person_merges_nothing(tmp_path):
    photos = {}
    for who, path in read_identities(require_data("deepface", "identities.csv"), None):
        photos.setdefault(who, []).append(path)
    engine = Engine(load_config(environ={}, overrides=SETTINGS))
    person, stranger = sorted(photos)[0], sorted(photos)[5]
    store = open_store(LocalStoreConfig(path=tmp_path / "store"), engine.cfg.gallery, engine.embedder.name,
                       engine.embedder.dim, create=True)
    with store:
        store.persons.add_person(person, [engine.enrolment_face(read_image(p, engine.cfg.images), str(p)).sample()
                                          for p in photos[person][:2]])
        processor = TrackedProcessor(engine, store, engine.cfg)
        faces = [head(engine, photos[stranger][0])] * 40 + [head(engine, photos[person][2])] * 80
        events = []
        for seq, face in enumerate(faces):  # one place, 10 fps: the stranger for 4 s, then the person for 8 s
            events += processor.process([DecodedFrame("door", seq, 1.0e9 + seq / 10, frame_with(face), 0.0)],
                                        NullTimer())
        visitors = {e.name for e in events if e.type == "track_identified" and e.visitor}
        assert len(visitors) == 1, events
        (visitor,) = visitors
        tracks = {e.track for e in events if e.type == "track_started"}
        assert len(tracks) == 1, "the tracker kept one track through the switch (else this tests nothing)"
        assert store.visitors.merged_into(visitor) is None
        assert store.visitors.faces_of(visitor), "the visitor keeps its faces"
        assert not any(e.merged_visitor for e in events)
        logged = store.events.query(EventQuery(identity=visitor))
        assert logged and all(e.event.name == visitor for e in logged), "the visitor's events were renamed"
        assert not any(e.type == "track_identified" and e.name == person for e in events), \
            "a track whose faces disagree is left unnamed (its template is not the person's)"
