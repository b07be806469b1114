"""Identity consistency: a visitor whose track is later named as an enrolled person is merged into that person
(seen on a real clip: a track was visitor-1 for 4 s, then named, and later tracks of that person matched
visitor-1). The real tracked processor on the demo walk, the real local store."""

from __future__ import annotations

import numpy as np

from argusnet.commands.demo import DEMO_NAME, astronaut
from camera_node.demo import render
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackedProcessor
from store import open_store
from store.config import LocalStoreConfig
from store.types import EventQuery

FPS = 10.0


class NullTimer:
    def observe(self, stage: str, seconds: float) -> None:
        pass


def feed(processor: TrackedProcessor, start: float, stop: float) -> list:
    events = []
    for t in np.arange(start, stop, 1 / FPS):
        image, _ = render(float(t))
        events += processor.process([DecodedFrame("cam", int(t * FPS), 1000.0 + float(t), image, 0.0)], NullTimer())
    return events


def test_a_visitor_later_named_as_an_enrolled_person_is_merged_into_them(engine, tmp_path):
    store = open_store(LocalStoreConfig(path=tmp_path / "store"), engine.cfg.gallery, engine.embedder.name,
                       engine.embedder.dim, create=True)
    with store:
        processor = TrackedProcessor(engine, store, engine.cfg)
        before = feed(processor, 0.5, 4.0)  # nobody enrolled: her track becomes a visitor
        visitors = [e for e in before if e.type == "track_identified" and e.visitor]
        assert len(visitors) == 1, before
        visitor, track = visitors[0].name, visitors[0].track
        store.persons.add_person(DEMO_NAME, [engine.enrolment_face(astronaut(), "astronaut").sample()])
        during = feed(processor, 4.0, 9.9)  # the same walk goes on: her track is re-embedded and named
        named = [e for e in during if e.type == "track_identified" and e.name == DEMO_NAME]
        assert named and named[0].track == track and named[0].merged_visitor == visitor, during
        assert not named[0].visitor
        assert visitor not in [v.visitor for v in store.visitors.list()]
        assert store.visitors.merged_into(visitor) == DEMO_NAME
        history = store.events.query(EventQuery(camera="cam", limit=1000))
        assert all(e.event.name != visitor for e in history)  # her visitor events now name her
        assert any(e.event.name == DEMO_NAME and e.event.track == track and e.event.type == "track_identified"
                   and e.event.merged_visitor is None for e in history)  # the visitor announcement, renamed
        later = feed(processor, 12.5, 19.0)  # she leaves and walks in again: a new track, named at once
        again = [e for e in later if e.type == "track_identified"]
        assert again and all(e.name == DEMO_NAME and not e.visitor for e in again), again
        assert again[0].track != track
