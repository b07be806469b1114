"""Corrections that stick, through the worker's own frame processor (`gpu_worker.tracked.TrackedProcessor`) on the
real street clip, replayed as a camera sends it, with the real models and a real local store.

The naming thresholds are lowered so that a stranger is named as the demo portrait in the first pass (the defaults
name nobody there: `argusnet eval openset`). An operator then says "not this person" with the real command while
the track is still alive: the worker withdraws the name at its next sync, the track's history stops carrying it,
and on the clip's next loops the same person (found by his boxes on the same clip frames) is never named so again.
"""

from __future__ import annotations

import pytest

from argusnet.config import load_config
from evaluation.openset import DEMO_NAME, demo_gallery
from evaluation.openset_video import Camera, new_store, same_person
from evaluation.replay import Clip, camera_frames
from gpu_worker.engine import Engine
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackedProcessor
from gpu_worker.video import NullTimer
from store.types import EventQuery
from tests.conftest import require_data

pytestmark = pytest.mark.slow
START = 1.0e9
LAX = {"recognition": {"threshold": 0.80, "name_threshold": 0.80},
       # no distant-face passes: what is detected does not depend on how fast this machine is
       "tracking": {"distant": {"fine_every_s": 0, "regions": 0}}}


class Feed:
    """Frames of one camera into the processor, remembering each track's boxes per (loop, clip frame)."""

    def __init__(self, processor: TrackedProcessor, camera: str) -> None:
        self.processor, self.camera = processor, camera
        self.boxes: dict[int, dict] = {}
        self.events: list[tuple[int, object]] = []
        self._frame = None
        processor.on_tracks = self._on_tracks

    def _on_tracks(self, item, boxes) -> None:
        for box in boxes:
            self.boxes.setdefault(box.track, {})[(self._frame.loop, self._frame.source_index)] = box.box

    def send(self, seq: int, frame) -> list:
        self._frame = frame
        item = DecodedFrame(self.camera, seq, START + frame.capture_ts, frame.image, START + frame.capture_ts)
        out = self.processor.process([item], NullTimer())
        self.events += [(frame.loop, e) for e in out]
        return out


def test_not_this_person_sticks_on_a_live_track_and_when_he_comes_back(cli, tmp_path):
    clip = Clip(require_data("facenet-pytorch", "arcade.mp4"))
    engine = Engine(load_config(environ={}, overrides=LAX))
    camera = Camera(clip, 720)
    store = new_store(engine, tmp_path / "store", [demo_gallery(engine)])
    with store:
        feed = Feed(TrackedProcessor(engine, store, engine.cfg), camera.name)
        frames = list(camera_frames(clip, 720, 10.0, loops=3))
        named = None
        for seq, frame in enumerate(frames):  # until a track named as her has been followed for a while
            feed.send(seq, frame)
            live = [r.track for r in feed.processor.cameras[camera.name].tracks.values()
                    if r.announced == DEMO_NAME and len(feed.boxes.get(r.track, ())) >= 8]
            if live:
                named, at = live[0], seq
                break
        assert named is not None, "with the lowered thresholds a stranger of the clip is named as the portrait"
        assert any(e.event.name == DEMO_NAME for e in store.events.query(EventQuery(camera=camera.name)))

        r = cli("tracks", "reject", camera.name, str(named), DEMO_NAME, "--json", "--gallery", tmp_path / "store")
        assert r.code == 0, r.err
        assert '"negatives_added": 1' in r.out
        before = len(feed.events)
        for seq, frame in enumerate(frames[at + 1:], start=at + 1):
            feed.send(seq, frame)
        feed.processor._end_idle_cameras(float("inf"))  # noqa: SLF001 - end the tracks still open
        feed.events += [(2, e) for e in feed.processor.idle()]

        logged = [e.event for e in store.events.query(EventQuery(camera=camera.name, limit=10_000))]
        assert not any(e.track == named and e.name == DEMO_NAME for e in logged), "his history still names her"
        ended = [e for _, e in feed.events if e.type == "track_ended" and e.track == named]
        assert ended and ended[0].name != DEMO_NAME, "the live track ended with the rejected name"
        first = {k: box for k, box in feed.boxes[named].items() if k[0] == 0}
        his = {t for t, b in feed.boxes.items() if t != named and same_person(first, b)}
        assert his, "he comes back on the clip's next loops"
        again = {e.track for _, e in feed.events[before:] if e.type == "track_identified" and e.name == DEMO_NAME}
        assert not again & (his | {named}), "named as the rejected person again"
        (face,) = store.negatives.faces_of(DEMO_NAME)
        assert face.source == f"camera:{camera.name}/track:{named}"
    actions = [line for line in cli("audit", "list", "--gallery", tmp_path / "store").out.splitlines()]
    assert any("reject" in line for line in actions)
