"""Distant faces in streams (`tracking.distant`, gpu_worker/distant.py): a face about 40 px tall in a 1280x720 frame,
which the usual 640 pass misses, is found by the periodic fine pass, confirmed and followed through regions on the
frames between, with the real detector and the real tracked processor."""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import ValidationError

from argusnet.commands.demo import enrol_demo_person
from evaluation.small_faces import degrade
from gpu_worker.distant import (
    DistantState,
    Found,
    FramePlan,
    StreamDetection,
    canvas_pixels,
    region_boxes,
    region_side,
)
from gpu_worker.distant_config import DistantFacesConfig
from gpu_worker.processing import DecodedFrame
from gpu_worker.spare import SpareCapacity
from gpu_worker.tracked import TrackedProcessor
from gpu_worker.video import NullTimer
from shared.images import ImageLimits, read_image
from shared.types import Detections, iou_matrix
from store.config import LocalStoreConfig

FAR = (1280, 720)
EMPTY = 3  # frames before the distant face appears


def with_distant(engine, **distant):
    tracking = engine.cfg.tracking
    return engine.cfg.model_copy(update={"tracking": tracking.model_copy(
        update={"distant": tracking.distant.model_copy(update=distant)})})


def frame(image: np.ndarray, index: int, camera: str = "cam") -> DecodedFrame:
    return DecodedFrame(camera, index, 1000.0 + index / 10.0, image, 0.0)


@pytest.fixture(scope="module")
def far_face(engine, data_dir):
    """A 1280x720 frame (grey, JPEG q75) with one real face 40 px tall that the 640 pass misses and the default
    fine pass finds (the first such photo of deepface's, in name order), and that face's box."""
    for photo in sorted((data_dir / "deepface").glob("img*.jpg")):
        image = read_image(photo, ImageLimits())
        faces = engine.detector.detect([image])[0]
        if len(faces) != 1:
            continue
        far = degrade(image, faces.boxes[0], 40, FAR)
        fine = engine.detector.detect([far], DistantFacesConfig().max_side)[0]
        if len(engine.detector.detect([far])[0]) == 0 and len(fine) == 1:
            return far, fine.boxes[0]
    pytest.fail("no deepface photo whose 40 px face the 640 pass misses and the fine pass finds")


def test_the_fine_pass_comes_every_fine_every_s_while_the_budget_allows_and_never_at_0():
    cost = canvas_pixels((720, 1280, 3), 960) / canvas_pixels((720, 1280, 3), 640) - 1.0
    assert cost == pytest.approx(1.125)  # 960x544 vs 640x384 input pixels, less the usual pass it replaces
    times = [100.0 + i / 10.0 for i in range(20)]
    state, cfg = DistantState(), DistantFacesConfig(fine_every_s=0.5, budget=0.3)
    # a budget of 0.3 a frame saves 1.125 within 5 frames
    assert [i for i, t in enumerate(times) if state.fine_due(t, cfg, cost)] == [0, 5, 10, 15]
    tight = DistantState()
    assert [i for i, t in enumerate(times) if tight.fine_due(t, DistantFacesConfig(budget=0.1), cost)] == [0, 11]
    spent = DistantState()
    due = []
    for i, t in enumerate(times):
        due += [i] if spent.fine_due(t, cfg, cost) else []
        spent.spend(0.2)  # regions take most of what each frame saves: fine passes wait
    assert due == [0, 9]  # each frame saves 0.3 and spends 0.2: the next 1.125 takes 9 to 10 frames
    off = DistantState()
    assert not any(off.fine_due(t, DistantFacesConfig(fine_every_s=0.0), cost) for t in times)


def test_the_budget_is_spent_at_what_passes_were_measured_to_cost():
    cfg = DistantFacesConfig(fine_every_s=0.5, budget=0.3)
    image = np.zeros((720, 1280, 3), np.uint8)
    state, none = DistantState(), Detections.empty()
    assert state.fine_due(100.0, cfg, 1.125)  # a new camera's first frame: one fine pass saved
    state.found(FramePlan(frame(image, 0), fine=True, expected=1.125), Found(none, np.zeros((0, 4)), fine_s=0.03))
    assert state.fine_cost is None and state.credit == pytest.approx(0.3)  # no usual pass timed yet: as planned
    usual = Found(none, np.zeros((0, 4)), base_s=0.01, region_s=0.002)
    state.found(FramePlan(frame(image, 1), regions=((0, 0, 64, 64),), expected=0.05), usual)
    assert state.base_s == pytest.approx(0.01) and state.credit == pytest.approx(0.3 + 0.05 - 0.2)
    state.found(FramePlan(frame(image, 5), fine=True, expected=1.125), Found(none, np.zeros((0, 4)), fine_s=0.04))
    assert state.fine_cost == pytest.approx(3.0)  # 4 usual passes, less the one it replaced
    assert state.credit == pytest.approx(0.15 + 1.125 - 3.0)  # what it cost beyond the plan delays the next one


def test_regions_are_region_px_at_the_regions_scale_centred_and_inside_the_frame():
    cfg = DistantFacesConfig(region_px=128, regions=4)  # at the frame's own resolution (region_scale 1)
    boxes = np.float32([[600, 340, 640, 380], [2, 3, 30, 40], [1900, 1050, 1915, 1075]])
    # twice the face's height rounded up to 32, at least 64: 40 px -> 96, 37 px -> 96, 25 px -> 64
    assert region_boxes(boxes, (720, 1280, 3), cfg) == ((572, 312, 668, 408), (0, 0, 96, 96), (1216, 656, 1280, 720))
    # at scale 2/3 the 40 px face is 27 px, its crop 64 px, which is 96 px of the frame
    assert region_boxes(boxes[:1], (1080, 1920, 3), cfg.model_copy(update={"region_scale": 2 / 3})) == \
        ((572, 312, 668, 408),)
    # capped at 64 px (or 128 px at scale 2), the crop still holds 1.75 x the face's 40 px: 70 px of the frame,
    # detected shrunk (or enlarged less)
    capped = DistantFacesConfig(regions=4, region_px=64)
    assert region_boxes(boxes, (720, 1280, 3), capped)[0] == (585, 325, 655, 395)
    assert region_side((585, 325, 655, 395), capped) == 64
    doubled = cfg.model_copy(update={"region_scale": 2.0})
    assert region_boxes(boxes[:1], (720, 1280, 3), doubled) == ((585, 325, 655, 395),)
    assert region_side((585, 325, 655, 395), doubled) == 128
    # a 1080p frame's small faces are up to 84 px (28 at the usual pass's 1/3): the crop holds them
    big = np.float32([[900, 500, 970, 584]])
    (x1, y1, x2, y2), = region_boxes(big, (1080, 1920, 3), cfg)
    assert x1 < 900 and y1 < 500 and x2 > 970 and y2 > 584 and x2 - x1 == 147
    assert region_side((x1, y1, x2, y2), cfg) == 128
    assert len(region_boxes(boxes, (720, 1280, 3), DistantFacesConfig(regions=2))) == 2


def test_settings_are_bounded():
    for bad in ({"fine_every_s": -1}, {"region_px": 100}, {"region_px": 32}, {"regions": 65}, {"max_side": 10},
                {"budget": 0}, {"region_scale": 0.1}, {"region_scale": 5}, {"typo": 1}):
        with pytest.raises(ValidationError):
            DistantFacesConfig(**bad)


def test_frames_no_larger_than_the_usual_pass_get_no_fine_pass(engine):
    stream = StreamDetection(engine, DistantFacesConfig(fine_every_s=0.5, regions=4))
    state = DistantState()
    plans = [stream.plan(state, frame(np.zeros((480, 640, 3), np.uint8), i), True, []) for i in range(10)]
    assert all(p.detect and not p.fine and not p.regions for p in plans)
    assert not stream.plan(state, frame(np.zeros((480, 640, 3), np.uint8), 10), False, []).detect


def test_a_fine_frame_finds_the_distant_face_and_the_next_frame_finds_it_again_in_its_region(engine, far_face):
    image, truth = far_face
    stream = StreamDetection(engine, DistantFacesConfig())  # the defaults
    state = DistantState()
    first = stream.plan(state, frame(image, 0), True, [])
    assert first.fine
    found = stream.detect([first], NullTimer())[0]
    assert len(found.faces) == 1 and len(found.keep) == 1
    state.found(first, found)
    second = stream.plan(state, frame(image, 1), True, [])
    assert not second.fine and len(second.regions) == 1
    again = stream.detect([second], NullTimer())[0]
    assert len(again.faces) == 1  # the usual pass still misses it: it is the region's
    assert iou_matrix(again.faces.boxes, truth[None]).max() > 0.7
    np.testing.assert_allclose(again.keep, again.faces.boxes)


@pytest.mark.parametrize("scale", [0.75, 1.5])
def test_a_region_detected_shrunk_or_enlarged_gives_the_face_in_frame_pixels(engine, far_face, scale):
    image, truth = far_face
    stream = StreamDetection(engine, DistantFacesConfig(region_scale=scale))
    state = DistantState(last_fine_ts=1000.1, small=truth[None].astype(np.float32), credit=1.0)  # no fine pass due
    plan = stream.plan(state, frame(image, 1), True, [])
    assert not plan.fine and len(plan.regions) == 1
    x1, y1, x2, y2 = plan.regions[0]
    assert x1 <= truth[0] and y1 <= truth[1] and truth[2] <= x2 and truth[3] <= y2
    found = stream.detect([plan], NullTimer())[0]
    assert len(found.faces) == 1
    assert iou_matrix(found.faces.boxes, truth[None]).max() > 0.7
    lm = found.faces.landmarks[0]
    assert (lm[:, 0] > truth[0]).all() and (lm[:, 0] < truth[2]).all() and (lm[:, 1] > truth[1]).all() \
        and (lm[:, 1] < truth[3]).all()


def run(engine, tmp_path, image: np.ndarray, frames: int, **distant) -> tuple[list, list]:
    """``frames`` frames at 10 fps: the empty grey frame first, ``image`` from frame EMPTY on."""
    cfg = with_distant(engine, **distant)
    empty = np.full_like(image, int(np.median(image)))
    store = enrol_demo_person(engine, LocalStoreConfig(path=tmp_path / f"gallery-{len(distant)}-{frames}"))
    seen: list = []
    processor = TrackedProcessor(engine, store, cfg, on_tracks=lambda item, boxes: seen.append((item.seq, boxes)))
    events = []
    with store:
        for i in range(frames):
            events += processor.process([frame(image if i >= EMPTY else empty, i)], NullTimer())
    return seen, events


def test_a_new_distant_face_is_tracked_at_the_next_fine_pass_and_followed(engine, far_face, tmp_path):
    image, truth = far_face
    seen, events = run(engine, tmp_path, image, 15, fine_every_s=0.5, regions=4)
    tracked = [seq for seq, boxes in seen if boxes and iou_matrix(np.float32([b.box for b in boxes]),
                                                                  truth[None]).max() > 0.5]
    # fine passes on frames 0, 5, 10; the face comes at frame 3: missed by the usual pass on frames 3 and 4, found
    # by the fine pass on frame 5 (a tentative track), found again in its region on frame 6 (confirmed)
    assert tracked and tracked[0] == 6
    assert tracked == list(range(6, 15))  # followed on every frame after, fine passes or not
    assert [e.type for e in events if e.type == "track_started"] == ["track_started"]
    seen_off, events_off = run(engine, tmp_path, image, 15, fine_every_s=0.0, regions=0)
    assert not any(boxes for _, boxes in seen_off) and not events_off  # today's default never sees it


def test_without_regions_the_fine_pass_alone_confirms_no_track(engine, far_face, tmp_path):
    image, _ = far_face
    seen, events = run(engine, tmp_path, image, 15, fine_every_s=0.5, regions=0)
    assert not any(boxes for _, boxes in seen) and not events


def test_a_region_whose_face_the_usual_pass_found_is_not_detected_again(engine, data_dir):
    for photo in sorted((data_dir / "deepface").glob("img*.jpg")):
        image = read_image(photo, ImageLimits())
        faces = engine.detector.detect([image])[0]
        if len(faces) == 1:
            break
    near = degrade(image, faces.boxes[0], 64, FAR)  # 32 px at the usual pass's scale: it finds the face
    usual = engine.detector.detect([near])[0]
    assert len(usual) == 1
    stream = StreamDetection(engine, DistantFacesConfig())
    state = DistantState(last_fine_ts=1000.1, small=usual.boxes.copy(), credit=1.0)
    plan = stream.plan(state, frame(near, 1), True, [])
    assert len(plan.regions) == 1
    found = stream.detect([plan], NullTimer())[0]
    assert found.region_s == 0.0 and len(found.faces) == 1
    state.found(plan, found)
    # the frame saved its budget, and what the plan expected for the region is given back whole
    assert plan.expected > 0.0 and state.credit == pytest.approx(1.0 + DistantFacesConfig().budget)


def test_the_passes_give_way_when_frames_wait_for_detection(engine, far_face):
    image, _ = far_face
    cfg = DistantFacesConfig(yield_after_ms=50.0)
    spare = SpareCapacity(cfg.yield_after_ms)
    assert spare.observe(0.02) == 1.0  # 20 ms behind: nothing gives way
    for _ in range(200):
        share = spare.observe(0.1)  # 100 ms: halfway from 50 to 150 ms
    assert share == pytest.approx(0.5, abs=0.01)
    for _ in range(200):
        share = spare.observe(0.3)
    assert share == 0.0
    assert SpareCapacity(0.0).observe(100.0) == 1.0  # 0: never yields
    stream = StreamDetection(engine, cfg)
    state = DistantState()
    behind = [stream.plan(state, DecodedFrame("cam", i, 1000.0 + i / 10, image, 0.0, behind_s=1.0), True, [])
              for i in range(10)]
    assert behind[0].fine  # one frame a second late halves the share only (a moving average)
    assert all(p.detect and not p.fine and not p.regions for p in behind[2:])  # then as with the passes off
    stream.spare.wait_s = 0.0  # caught up: nothing was saved meanwhile, so a fine pass comes once it is again
    again = [stream.plan(state, frame(image, i), True, []).fine for i in range(10, 13)]
    assert again == [False, True, False]


def test_the_worker_marks_how_far_behind_its_cameras_usual_it_takes_frames_up():
    from types import SimpleNamespace

    from gpu_worker.service import AGE_FLOOR_RISE_S, WorkerService

    holder = SimpleNamespace(_age_floor={})
    image = np.zeros((8, 8, 3), np.uint8)
    now = time.time()
    # camera a's clock is 5 s ahead of this host's, b's is right; both usually arrive 40 ms after capture
    usual = WorkerService._behind(holder, [DecodedFrame("a", 1, now + 5.0 - 0.04, image, now),
                                           DecodedFrame("b", 1, now - 0.04, image, now)])
    assert [f.behind_s for f in usual] == [0.0, 0.0]
    late = WorkerService._behind(holder, [DecodedFrame("a", 2, now + 5.0 - 0.3, image, now)])[0]
    assert late.behind_s == pytest.approx(0.26 - AGE_FLOOR_RISE_S, abs=0.02)  # a backlog of about 260 ms
    assert late.seq == 2 and late.camera == "a" and late.image is image
    stepped = WorkerService._behind(holder, [DecodedFrame("b", 2, now - 3.0, image, now)])[0]
    assert stepped.behind_s == 0.0  # b's clock went 3 s back (or its frames are that late: dropped as stale anyway)


def test_a_face_the_usual_pass_found_does_not_hide_a_missed_neighbour(engine, far_face):
    image, truth = far_face
    stream = StreamDetection(engine, DistantFacesConfig())

    def face_at(dx: float) -> Detections:
        return Detections(np.float32([truth + np.float32([dx, 0, dx, 0])]), np.float32([0.9]),
                          np.zeros((1, 5, 2), np.float32))

    crop = region_boxes(truth[None], image.shape, stream.cfg)
    plan = FramePlan(frame(image, 1), regions=crop, targets=(tuple(truth.tolist()),), expected=0.05)
    beside = face_at(25.0)  # another face, wholly inside the region's crop
    assert crop[0][0] <= beside.boxes[0, 0] and beside.boxes[0, 2] <= crop[0][2]
    extra, seconds = stream._regions([plan], [beside])
    assert seconds[0] > 0.0 and len(extra[0]) == 1  # the region is detected all the same, and finds its face
    assert iou_matrix(extra[0].boxes, truth[None]).max() > 0.7
    _, seconds = stream._regions([plan], [face_at(4.0)])
    assert seconds[0] == 0.0  # the region's own face, moved a little, was found: skipped
