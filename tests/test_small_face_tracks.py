"""Recognition that knows its limits (issue 15): a face too small for a reliable embedding is tracked but never
embedded, so it gets no name and no visitor id, until a big enough view of it comes.

Real parts only: the real detector (at 1280, so that the small faces are found at all), the real embedder, a real
local store with a person enrolled from a real photo, and real faces of other photos shrunk into a 1280x720 frame
through JPEG q75 (as `argusnet eval small-faces` and `argusnet eval track --face-height` do)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from evaluation.synthetic import (
    FAR_FRAME,
    FAR_JPEG_QUALITY,
    Appearance,
    Sequence,
    SpriteCache,
    backgrounds,
    people,
    render,
)
from evaluation.track import enrol
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackedProcessor
from shared.protocol import TrackEvent

pytestmark = [pytest.mark.data, pytest.mark.slow]

CENTRE = (FAR_FRAME[0] / 2, FAR_FRAME[1] / 2)
SMALL = 26.0  # px tall: its box's shorter side is about 20 px, under the default tracking.scheduler.min_face_px
FPS = 10.0


class _NoTimer:
    def observe(self, stage: str, seconds: float) -> None:
        pass


@dataclass
class Feed:
    """What a processor produced, frame by frame."""

    boxes: list[int] = field(default_factory=list)  # live tracks reported per frame
    events: list[tuple[int, TrackEvent]] = field(default_factory=list)  # (frame index, event)
    embeddings: list[int] = field(default_factory=list)  # processor.embeddings after each frame

    def identified(self) -> list[tuple[int, TrackEvent]]:
        return [(i, e) for i, e in self.events if e.type == "track_identified"]


@pytest.fixture(scope="module")
def far_engine():
    from argusnet.config import load_config
    from gpu_worker.engine import Engine

    return Engine(load_config(environ={}, overrides={"detector": {"max_side": 1280}}))


@pytest.fixture(scope="module")
def scene(far_engine, data_dir):
    persons = people(data_dir)
    return persons, SpriteCache(far_engine.detector), backgrounds(data_dir, FAR_FRAME)[1]  # coffee: no face in it


def frames_of(person, sprites: SpriteCache, background: np.ndarray, sizes: list[float]):
    """One 1280x720 JPEG-q75 frame per size: the person's first sprite photo, its face box that tall, at the centre
    (a person standing far away, then walking up to the camera)."""
    photo = person.sprite_photos[0]
    for size in sizes:
        app = Appearance(1, person, photo, 0, 0, CENTRE, CENTRE, size)
        seq = Sequence(0, 1, background, (app,), width=FAR_FRAME[0], height=FAR_FRAME[1],
                       jpeg_quality=FAR_JPEG_QUALITY)
        image, _truth = next(render(seq, sprites))
        yield image


def feed(processor: TrackedProcessor, images) -> Feed:
    out = Feed()
    processor.on_tracks = lambda item, boxes: out.boxes.append(len(boxes))
    start = 1_000.0
    for i, image in enumerate(images):
        before = len(out.boxes)
        for event in processor.process([DecodedFrame("far", i, start + i / FPS, image, start + i / FPS)], _NoTimer()):
            out.events.append((i, event))
        if len(out.boxes) == before:
            out.boxes.append(0)
        out.embeddings.append(processor.embeddings)
    return out


def with_gate(cfg, min_face_px: int, visitor_min_face_px: int | None = None):
    """``cfg`` with tracking.scheduler.min_face_px (faces embedded) and visitors.min_face_px (faces that may make
    a track a visitor) changed."""
    tracking = cfg.tracking.model_copy(update={"scheduler": cfg.tracking.scheduler.model_copy(
        update={"min_face_px": min_face_px})})
    out = cfg.model_copy(update={"tracking": tracking})
    if visitor_min_face_px is not None:
        out = out.model_copy(update={"visitors": cfg.visitors.model_copy(update={"min_face_px": visitor_min_face_px})})
    return out


def test_a_small_face_is_tracked_unnamed_then_named_when_it_comes_closer(far_engine, scene, tmp_path):
    persons, sprites, background = scene
    person = next(p for p in persons if p.enrolled)
    small, grow = 20, 16
    sizes = [SMALL] * small + [SMALL * 1.08 ** (k + 1) for k in range(grow)] + [SMALL * 1.08 ** grow] * 6
    store = enrol(far_engine, tmp_path / "gallery", persons)
    try:
        cfg = far_engine.cfg
        assert cfg.tracking.scheduler.min_face_px > SMALL * 0.8  # the small phase is under the default gate
        out = feed(TrackedProcessor(far_engine, store, cfg), frames_of(person, sprites, background, sizes))
        assert sum(1 for n in out.boxes[:small] if n) >= small // 2, "the small face was not even tracked"
        started = [(i, e) for i, e in out.events if e.type == "track_started"]
        assert started and started[0][0] < small
        assert out.embeddings[small - 1] == 0, "a face under min_face_px was embedded"
        assert not [i for i, _ in out.identified() if i < small], "named (or made a visitor) from a small face"
        assert store.visitors.list() == []
        named = out.identified()
        assert named, "never named, even close up"
        first, event = named[0]
        assert event.name == person.name and not event.visitor, event
        assert event.track == started[0][1].track, "the small face's track was not the one named"
        assert all(e.name == person.name for _, e in named)
        # control: without the gate the same small faces are embedded (the gate is what held them back)
        ungated = feed(TrackedProcessor(far_engine, store, with_gate(cfg, 0)),
                       frames_of(person, sprites, background, sizes[:small]))
        assert ungated.embeddings[-1] > 0
    finally:
        store.close()


def test_a_stranger_seen_only_small_gets_no_visitor_id(far_engine, scene, tmp_path):
    persons, sprites, background = scene
    stranger = next(p for p in persons if not p.enrolled)
    sizes = [SMALL] * 40  # 4 s: long enough for tracking.visitor_after embeddings without the gate
    store = enrol(far_engine, tmp_path / "gallery", persons)
    try:
        gated = feed(TrackedProcessor(far_engine, store, far_engine.cfg),
                     frames_of(stranger, sprites, background, sizes))
        assert sum(1 for n in gated.boxes if n) >= len(sizes) // 2
        assert gated.embeddings[-1] == 0 and not gated.identified() and store.visitors.list() == []
        # embedded, but a visitor needs a face an enrolment would take (visitors.min_face_px)
        embedded = feed(TrackedProcessor(far_engine, store, with_gate(far_engine.cfg, 0)),
                        frames_of(stranger, sprites, background, sizes))
        assert embedded.embeddings[-1] >= far_engine.cfg.tracking.visitor_after
        assert not embedded.identified() and store.visitors.list() == []
        ungated = feed(TrackedProcessor(far_engine, store, with_gate(far_engine.cfg, 0, 0)),
                       frames_of(stranger, sprites, background, sizes))
        visitors = [e for _, e in ungated.identified() if e.visitor]
        assert ungated.embeddings[-1] >= far_engine.cfg.tracking.visitor_after and visitors, \
            json.dumps([e.to_json_dict() for _, e in ungated.events])
    finally:
        store.close()


def test_a_stranger_becomes_a_visitor_once_seen_large_enough_and_only_from_large_faces(far_engine, scene, tmp_path):
    persons, sprites, background = scene
    stranger = next(p for p in persons if not p.enrolled)
    small, grow = 20, 16  # far away (embedded with the scheduler's gate off), then walking up: one track
    sizes = [SMALL] * small + [SMALL * 1.08 ** (k + 1) for k in range(grow)] + [SMALL * 1.08 ** grow] * 10
    store = enrol(far_engine, tmp_path / "gallery", persons)
    try:
        out = feed(TrackedProcessor(far_engine, store, with_gate(far_engine.cfg, 0)),
                   frames_of(stranger, sprites, background, sizes))
        assert out.embeddings[small - 1] >= far_engine.cfg.tracking.visitor_after  # small faces were embedded
        started = [e for _, e in out.events if e.type == "track_started"]
        visitors = [(i, e) for i, e in out.identified() if e.visitor]
        assert visitors and visitors[0][0] >= small, "a visitor was made from the small faces"
        index, event = visitors[0]
        assert event.track == started[0].track  # the track of the small faces, grown
        # minted from the faces at least visitors.min_face_px (so at least that tall) embedded up to then only
        tall = [i for i in range(small, index + 1) if sizes[i] >= far_engine.cfg.visitors.min_face_px]
        large = sum(out.embeddings[i] - out.embeddings[i - 1] for i in tall)
        faces = store.visitors.faces_of(event.name)
        assert 1 <= len(faces) <= large, (len(faces), large)
    finally:
        store.close()


def test_far_view_is_the_same_scene_with_faces_of_the_asked_height(far_engine, data_dir):
    from evaluation.synthetic import WIDTH, far_view, make_sequence

    persons = people(data_dir)
    base = make_sequence(3, persons, backgrounds(data_dir), seed=1)
    far = make_sequence(3, persons, backgrounds(data_dir, FAR_FRAME), seed=1, face_height=40)
    assert (far.width, far.height, far.jpeg_quality) == (*FAR_FRAME, FAR_JPEG_QUALITY) and far.frames == base.frames
    for a, b in zip(base.appearances, far.appearances):
        assert (a.person, a.photo, a.first, a.last) == (b.person, b.photo, b.first, b.last)
        assert 36.0 <= b.size <= 44.0
        k = b.size / a.size  # the path shrinks with the face: the same face heights per second
        assert np.hypot(*np.subtract(b.end, b.start)) == pytest.approx(k * np.hypot(*np.subtract(a.end, a.start)))
    assert far.pillar.width == pytest.approx(40 * 40 / 83) and base.pillar.end == WIDTH + 60
    heights = []
    for i, (image, truth) in enumerate(render(far, SpriteCache(far_engine.detector))):
        assert image.shape == (FAR_FRAME[1], FAR_FRAME[0], 3)
        heights += [t.box[3] - t.box[1] for t in truth]
        if i >= 40:
            break
    assert heights and all(36.0 <= h <= 44.0 for h in heights)  # the face box's height is the asked one
    with pytest.raises(ValueError, match="1280x720 background"):
        make_sequence(0, persons, backgrounds(data_dir), face_height=40)
    with pytest.raises(ValueError, match="face height must be in"):
        far_view(far, 2.0, np.random.default_rng(0))


def test_eval_track_face_height_option(cli, tmp_path):
    for bad in ("2", "nan", "5000"):
        r = cli("eval", "track", "--face-height", bad, "--sequences", "1")
        assert r.code == 2 and "--face-height must be between 8 and 400 px" in r.err, r.err
    out = tmp_path / "t.json"
    r = cli("eval", "track", "--face-height", "56", "--sequences", "1", "--json", out)
    assert r.code == 0, r.err
    result = json.loads(out.read_text())
    assert {"idf1", "mota", "hota", "id_switches", "wrong_names", "time_to_name_ms_p50", "embeddings_per_track",
            "named_recall", "gt_tracks_named", "gt_tracks_enrolled", "gt_tracks_found", "time_to_name_gt_ms_p50",
            "enrolled_as_visitor"} <= set(result)
    assert (result["face_height"], result["frame"], result["detector_max_side"]) == (56.0, "1280x720", 640)
    assert result["min_face_px"] == 24 and result["wrong_names"] == 0
    assert 0 < result["gt_tracks_found"] <= result["gt_tracks"] and result["gt_tracks_enrolled"] > 0
