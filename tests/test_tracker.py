"""The tracker contract over every backend, ByteTrack specifics, the recognition scheduler and identity voting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.voting import TrackIdentity, VotingConfig
from shared.types import Detections
from tracker.association import assign
from tracker.base import FrameMeta, Tracker, TrackState
from tracker.config import ByteTrackConfig, SchedulerConfig, SortConfig
from tracker.factory import build_tracker
from tracker.kalman import KalmanBoxFilter
from tracker.scheduler import RecognitionScheduler, TrackCandidate

BACKENDS = [ByteTrackConfig(), SortConfig()]


def dets(boxes, scores=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.99, np.float32) if scores is None else np.asarray(scores, np.float32)
    return Detections(boxes, scores, np.zeros((len(boxes), 5, 2), np.float32))


def meta(i: int, fps: float = 10.0) -> FrameMeta:
    return FrameMeta("cam", i, i / fps, 640, 480)


def box_at(x: float, y: float, side: float = 60.0) -> list[float]:
    return [x, y, x + side, y + side]


@pytest.fixture(params=BACKENDS, ids=lambda c: c.type)
def tracker(request) -> Tracker:
    return build_tracker(request.param)


def run(tracker: Tracker, frames: list[Detections], start: int = 0) -> list[list]:
    return [tracker.update(d, meta(start + i)) for i, d in enumerate(frames)]


def test_contract_is_a_tracker(tracker):
    assert isinstance(tracker, Tracker)


def test_contract_stable_ids_for_separate_moving_faces(tracker):
    frames = [dets([box_at(20 + 6 * i, 50), box_at(500 - 5 * i, 300)]) for i in range(40)]
    out = run(tracker, frames)
    ids = [{t.det_index: t.track_id for t in tracks} for tracks in out]
    assert ids[0] == {0: 1, 1: 2}
    assert all(i == ids[0] for i in ids), ids
    assert all(t.state is TrackState.TRACKED for tracks in out for t in tracks)


def test_contract_ended_exactly_once_after_the_buffer(tracker):
    run(tracker, [dets([box_at(100, 100)]) for _ in range(5)])
    ended = []
    for i in range(5, 60):
        ended += [t for t in tracker.update(dets([]), meta(i)) if t.state is TrackState.ENDED]
    assert [t.track_id for t in ended] == [1]
    assert ended[0].det_index is None and ended[0].hits == 5


def test_contract_reset_and_empty_and_bad_input(tracker):
    assert tracker.update(Detections.empty(), meta(0)) == []
    run(tracker, [dets([box_at(10, 10)]) for _ in range(3)])
    tracker.reset()
    assert [t.track_id for t in tracker.update(dets([box_at(300, 300)]), meta(0))] == [1]
    with pytest.raises(ValueError, match="Detections"):
        tracker.update(np.zeros((1, 4), np.float32), meta(1))
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\), got \(1, 3\)"):
        Detections(np.zeros((1, 3), np.float32), np.ones(1, np.float32), np.zeros((1, 5, 2), np.float32))


def test_contract_new_face_needs_min_hits_before_it_is_reported(tracker):
    run(tracker, [dets([box_at(10, 10)])])  # first frame: confirmed at once
    out = run(tracker, [dets([box_at(10, 10), box_at(300, 300)]), dets([box_at(10, 10), box_at(300, 300)])], 1)
    assert [t.track_id for t in out[0]] == [1]  # the new face is tentative for one frame
    assert sorted(t.track_id for t in out[1]) == [1, 2]


def test_contract_predict_moves_tracks_between_detections_and_keeps_their_ids(tracker):
    run(tracker, [dets([box_at(20 + 6 * i, 50), box_at(500 - 5 * i, 300)]) for i in range(10)])
    run(tracker, [dets([box_at(80, 50), box_at(450, 300), box_at(300, 400)])], 10)  # the third is tentative
    predicted = tracker.predict(meta(11))
    assert sorted(t.track_id for t in predicted) == [1, 2]
    assert all(t.det_index is None and t.state is TrackState.TRACKED for t in predicted)
    by_id = {t.track_id: t.box for t in predicted}
    np.testing.assert_allclose(by_id[1], box_at(20 + 6 * 11, 50), atol=3.0)  # 6 px a frame to the right
    np.testing.assert_allclose(by_id[2], box_at(500 - 5 * 11, 300), atol=3.0)
    out = tracker.update(dets([box_at(20 + 6 * 12, 50), box_at(500 - 5 * 12, 300)]), meta(12))
    assert {t.det_index: t.track_id for t in out} == {0: 1, 1: 2}


def test_contract_predict_neither_confirms_nor_ends_a_track(tracker):
    run(tracker, [dets([box_at(100, 100)]) for _ in range(3)])
    for i in range(3, 60):  # far past the lost buffer, but no detector ran: the track is neither lost nor ended
        assert [t.track_id for t in tracker.predict(meta(i))] == [1]
    assert [(t.track_id, t.state) for t in tracker.update(dets([]), meta(60))] == [(1, TrackState.ENDED)]
    assert tracker.predict(meta(61)) == []


@pytest.mark.parametrize("cfg", BACKENDS, ids=lambda c: c.type)
def test_contract_tracks_survive_a_change_of_the_frame_size(cfg):
    """A camera node lowering its resolution on a slow link (1280x720 -> 1024x576 -> back): the same faces keep
    their tracks, and the boxes come back in each frame's own pixels. The bare backend loses them."""
    faces = [box_at(600, 300, 80), box_at(200, 120, 60)]

    def frame(i: int, scale: float) -> tuple[Detections, FrameMeta]:
        boxes = [[v * scale for v in b] for b in faces]
        return dets(boxes), FrameMeta("cam", i, i / 10.0, round(1280 * scale), round(720 * scale))

    tracker = build_tracker(cfg)
    scales = [1.0] * 5 + [0.8] * 5 + [1.0] * 5
    out = [tracker.update(*frame(i, s)) for i, s in enumerate(scales)]
    assert all(sorted(t.track_id for t in tracks) == [1, 2] for tracks in out[1:]), out
    small = {t.det_index: t.box for t in out[7]}
    np.testing.assert_allclose(small[0], np.asarray(faces[0]) * 0.8, atol=1.0)
    bare = build_tracker(cfg).inner
    ids = {t.track_id for i, s in enumerate(scales) for t in bare.update(*frame(i, s)) if t.state is TrackState.TRACKED}
    assert ids - {1, 2}, "the bare backend was expected to start new tracks after the size change"


def test_bytetrack_low_score_detection_keeps_an_occluded_track():
    tracker = build_tracker(ByteTrackConfig())
    run(tracker, [dets([box_at(100 + 5 * i, 100)]) for i in range(5)])
    out = run(tracker, [dets([box_at(125 + 5 * i, 100)], [0.6]) for i in range(5)], 5)
    assert all([t.track_id for t in tracks] == [1] for tracks in out)
    sort = build_tracker(SortConfig())
    run(sort, [dets([box_at(100 + 5 * i, 100)]) for i in range(5)])
    assert run(sort, [dets([box_at(125, 100)], [0.6])], 5) == [[]]  # SORT drops weak detections


def test_bytetrack_recovers_a_track_after_a_short_gap_and_dropped_frames():
    tracker = build_tracker(ByteTrackConfig(lost_buffer_s=1.5))
    run(tracker, [dets([box_at(100 + 10 * i, 100)]) for i in range(6)])
    for i in range(6, 14):  # 0.8 s without the face
        assert tracker.update(dets([]), meta(i)) == []
    out = tracker.update(dets([box_at(240, 100)]), meta(14))  # where constant velocity puts it
    assert [t.track_id for t in out] == [1]
    out = tracker.update(dets([box_at(270, 100)]), FrameMeta("cam", 17, 1.7, 640, 480))  # two frames dropped
    assert [t.track_id for t in out] == [1]


def test_bytetrack_crossing_faces_keep_their_ids():
    tracker = build_tracker(ByteTrackConfig())
    frames = [dets([box_at(100 + 12 * i, 200), box_at(460 - 12 * i, 215)]) for i in range(31)]
    out = run(tracker, frames)
    first = {t.det_index: t.track_id for t in out[0]}
    last = {t.det_index: t.track_id for t in out[-1]}
    assert first == last == {0: 1, 1: 2}


def test_assignment_maximises_total_iou_within_the_gate():
    iou = np.array([[0.9, 0.8, 0.0], [0.85, 0.1, 0.0], [0.0, 0.0, 0.15]], np.float32)
    found = assign(iou, np.array([0, 1, 2]), np.array([0, 1, 2]), min_iou=0.2)
    assert sorted(map(tuple, found.pairs.tolist())) == [(0, 1), (1, 0)]  # 1.65 beats the greedy 0.9 + 0.1
    assert found.unmatched_tracks.tolist() == [2] and found.unmatched_detections.tolist() == [2]
    sub = assign(iou, np.array([2, 1]), np.array([0]), min_iou=0.2)  # indices map back to the full matrix
    assert sub.pairs.tolist() == [[1, 0]] and sub.unmatched_tracks.tolist() == [2]


def test_kalman_predicts_constant_velocity_over_a_timestamp_gap():
    f = KalmanBoxFilter()
    f.add(np.array([box_at(100, 100)], np.float32))
    for i in range(1, 15):
        f.predict(np.array([0.1]))
        f.update(np.array([0]), np.array([box_at(100 + 10 * i, 100)], np.float32))  # 100 px/s to the right
    f.predict(np.array([0.5]))  # five frames dropped
    np.testing.assert_allclose(f.boxes()[0], box_at(240 + 50, 100), atol=4.0)  # last seen at 240


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.tuples(st.floats(0, 600), st.floats(0, 440), st.floats(4, 120), st.floats(0.01, 1)),
                         max_size=8), min_size=1, max_size=25),
       st.sampled_from(BACKENDS))
def test_random_detections_never_crash_and_ids_are_unique(frames, cfg):
    tracker = build_tracker(cfg)
    for i, faces in enumerate(frames):
        boxes = [[x, y, x + s, y + s] for x, y, s, _ in faces]
        out = tracker.update(dets(boxes, [p for *_, p in faces]), meta(i))
        ids = [t.track_id for t in out]
        assert len(ids) == len(set(ids))
        assert all(t.det_index is None or 0 <= t.det_index < len(faces) for t in out)


# ---------------------------------------------------------------------------------------------- scheduler
def cand(track: int, quality: float = 0.5, named: bool = False, uncertain: bool = False,
         size_px: float = 60.0, misses: int = 0) -> TrackCandidate:
    return TrackCandidate(track, quality, named, uncertain, size_px, misses)


def embed_times(s: RecognitionScheduler, identity: TrackIdentity, until: float, quality=lambda t: 0.5,
                candidate=lambda t: None) -> list[float]:
    """A track seen every 0.125 s (exact in binary) until ``until``: the times the scheduler embeds it, each
    embedding observed as ``candidate(t)`` (None: it named nobody)."""
    times = []
    for step in range(int(until * 8) + 1):
        t = step / 8
        c = cand(1, quality(t), named=identity.settled, uncertain=identity.uncertain, misses=identity.misses)
        if s.choose([c], now=t) == [1]:
            s.record(1, c.quality, ts=t)
            identity.observe(candidate(t), 0.95 if candidate(t) else 0.3, None, 1.0, t)
            times.append(t)
    return times


def test_scheduler_backs_off_a_stranger_and_still_takes_a_better_face_at_once():
    cfg = SchedulerConfig(unnamed_refresh_s=0.25, unnamed_backoff=2.0, refresh_s=3.0, min_interval_s=0.25)
    stranger = embed_times(RecognitionScheduler(cfg), TrackIdentity(VotingConfig(), 0.9), until=12.0)
    assert stranger == [0.0, 0.25, 0.5, 0.75, 1.25, 2.25, 4.25, 7.25, 10.25]  # 3 misses at the usual pace, then
    # waits of 0.5, 1, 2 s, then refresh_s
    flat = embed_times(RecognitionScheduler(cfg.model_copy(update={"unnamed_backoff": 1.0})),
                       TrackIdentity(VotingConfig(), 0.9), until=3.0)
    assert flat == [0.25 * k for k in range(13)]  # 1 = off: every unnamed_refresh_s
    closer = embed_times(RecognitionScheduler(cfg), TrackIdentity(VotingConfig(), 0.9), until=4.0,
                         quality=lambda t: 0.5 if t < 1.5 else 0.8)
    assert closer == [0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 3.5]  # walks up at 1.5 s: embedded then, not at 2.25 s
    # an embedding that names someone ends the back-off: the next one comes at the usual pace
    named = embed_times(RecognitionScheduler(cfg), TrackIdentity(VotingConfig(confirm_votes=3, instant_lead=1.0),
                                                                 0.9),
                        until=1.75, candidate=lambda t: None if t < 1.0 else "ann")
    assert named == [0.0, 0.25, 0.5, 0.75, 1.25, 1.5, 1.75]
    assert RecognitionScheduler(cfg).unnamed_wait(40) == 3.0
    # a stranger in view for days: the wait stays at refresh_s (a float power would overflow past ~1,000 misses)
    for backoff in (1.0, 1.0001, 2.0, 10.0):
        far = RecognitionScheduler(cfg.model_copy(update={"unnamed_backoff": backoff}))
        assert far.unnamed_wait(10**6) == (0.25 if backoff == 1.0 else 3.0)
        assert far.may_choose(cand(1, misses=10**6), now=0.0)


def test_scheduler_rejects_negative_misses():
    with pytest.raises(ValueError, match="misses of track 7 must be >= 0, got -1"):
        cand(7, misses=-1)


def test_scheduler_new_tracks_first_then_unnamed_then_better_then_refresh():
    s = RecognitionScheduler(SchedulerConfig(budget=3, refresh_s=2.0, unnamed_refresh_s=0.5, quality_margin=0.25,
                                             min_interval_s=0.1))
    for track in (1, 2, 3):
        s.record(track, 0.5, ts=0.0)
    picked = s.choose([cand(1, 0.5, named=True), cand(2, 0.9, named=True), cand(3, 0.5), cand(4), cand(5)], now=1.0)
    assert picked == [4, 5, 3]  # two new tracks, then the unnamed one; the better face waits (budget)
    assert s.choose([cand(2, 0.9, named=True)], now=1.0) == [2]  # 0.9 > 0.5 * 1.25
    assert s.choose([cand(1, 0.5, named=True)], now=1.0) == []
    assert s.choose([cand(1, 0.5, named=True)], now=2.5) == [1]  # refresh after 2 s


def test_scheduler_limits():
    s = RecognitionScheduler(SchedulerConfig(min_interval_s=0.3, unnamed_refresh_s=0.1, min_quality=0.1,
                                             max_per_track=2))
    assert s.choose([cand(1, quality=0.05)], now=0.0) == []  # too poor to embed
    s.record(1, 0.5, ts=0.0)
    assert s.choose([cand(1)], now=0.2) == []  # min interval
    assert s.choose([cand(1)], now=0.4) == [1]
    s.record(1, 0.5, ts=0.4)
    assert s.choose([cand(1, quality=0.99)], now=5.0) == []  # cap reached
    s.forget(1)
    assert s.choose([cand(1)], now=5.0) == [1]


# ---------------------------------------------------------------------------------------------- voting
def test_voting_needs_agreeing_votes_or_one_very_confident_one():
    v = TrackIdentity(VotingConfig(confirm_votes=2, instant_lead=0.04), threshold=0.9)
    assert v.observe("ann", 0.92, 0.05, 1.0, 0.0) is None and v.name is None and v.uncertain
    change = v.observe("ann", 0.93, 0.05, 1.0, 0.1)
    assert change.name == "ann" and change.previous is None and change.similarity == 0.93 and v.settled
    quick = TrackIdentity(VotingConfig(confirm_votes=3, instant_lead=0.04), threshold=0.9)
    assert quick.observe("bob", 0.95, 0.1, 1.0, 0.0).name == "bob"


def test_voting_renames_only_on_strong_evidence_and_unknown_never_unnames():
    v = TrackIdentity(VotingConfig(confirm_votes=2, rename_ratio=2.0), threshold=0.9)
    v.observe("ann", 0.92, None, 1.0, 0.0)
    v.observe("ann", 0.92, None, 1.0, 0.1)
    for i in range(5):
        assert v.observe(None, 0.5, None, 1.0, 0.2 + i) is None
    assert v.name == "ann"
    assert v.observe("bob", 0.92, None, 1.0, 1.0) is None
    assert v.observe("bob", 0.92, None, 1.0, 1.1) is None and v.uncertain  # 2 vs 2: not enough
    change = v.observe("bob", 0.92, None, 2.0, 1.2)  # support 4 vs 2: twice ann's, renamed
    assert (change.name, change.previous, change.votes) == ("bob", "ann", 3) and v.name == "bob"


def test_voting_mostly_unknown_stays_unknown():
    v = TrackIdentity(VotingConfig(confirm_votes=2), threshold=0.9)
    for i in range(3):
        v.observe(None, 0.5, None, 1.0, i)
    assert v.misses == 3
    assert v.observe("ann", 0.91, None, 1.0, 3) is None and v.misses == 0
    assert v.observe("ann", 0.91, None, 1.0, 4) is None  # 2 votes but unknown weighs 3
    assert v.name is None
    with pytest.raises(ValueError, match="weight must be a finite number > 0, got 0.0"):
        v.observe("ann", 0.9, None, 0.0, 5)
    with pytest.raises(ValueError, match="weight must be a finite number > 0, got nan"):
        v.observe("ann", 0.9, None, float("nan"), 5)
    with pytest.raises(ValueError, match="similarity must be finite, got nan"):
        v.observe("ann", float("nan"), None, 1.0, 5)


def test_scheduler_rejects_a_nan_quality():
    with pytest.raises(ValueError, match="quality of track 7 must be finite, got nan"):
        cand(7, float("nan"))


def test_scheduler_never_embeds_a_face_under_min_face_px_and_takes_it_first_once_big_enough():
    s = RecognitionScheduler(SchedulerConfig(min_face_px=24, min_interval_s=0.3, budget=1))
    small = cand(1, quality=0.9, size_px=23.9)  # sharp and frontal, but too small
    assert not s.recognisable(small) and not s.may_choose(small, now=0.0)
    assert s.choose([small], now=0.0) == [] and s.choose([small], now=5.0) == []
    s.record(2, 0.5, ts=0.0)  # another track, already embedded once
    assert s.choose([cand(1, 0.3, size_px=24.0), cand(2, 0.9)], now=6.0) == [1]  # still "new": first in line
    s.record(1, 0.3, ts=6.0)
    assert s.choose([cand(1, 0.9, size_px=20.0)], now=9.0) == []  # once embedded, small views still never are
    assert s.choose([cand(1, 0.01, size_px=200.0)], now=9.0) == []  # nor poor ones (min_quality 0.05)
    off = RecognitionScheduler(SchedulerConfig(min_face_px=0))
    assert off.choose([cand(1, 0.9, size_px=4.0)], now=0.0) == [1]


def test_scheduler_rejects_a_bad_face_size():
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="face size of track 7 must be a finite number >= 0"):
            cand(7, size_px=bad)


def test_scheduler_may_choose_is_an_upper_bound_check():
    s = RecognitionScheduler(SchedulerConfig(min_interval_s=0.1, refresh_s=10.0, quality_margin=0.25,
                                             min_quality=0.1))
    assert s.may_choose(cand(1, 0.5), now=0.0)  # new
    assert not s.may_choose(cand(1, 0.05), now=0.0)  # even at its best it is below min_quality
    s.record(1, 0.5, ts=0.0)
    assert not s.may_choose(cand(1, 0.6, named=True), now=1.0)  # 0.6 < 0.5 * 1.25 and no refresh due
    assert s.may_choose(cand(1, 0.7, named=True), now=1.0)  # could be better: worth computing the real quality


def test_a_name_waits_for_the_confirmation_of_the_whole_track():
    v = TrackIdentity(VotingConfig(confirm_votes=2, instant_lead=0.04), threshold=0.9)
    asked = []

    def refuse(name):
        asked.append(name)
        return False
    v.observe("ann", 0.92, None, 1.0, 0.0, confirm=refuse)
    assert v.observe("ann", 0.92, None, 1.0, 0.1, confirm=refuse) is None and v.name is None and asked == ["ann"]
    assert v.observe("ann", 0.99, None, 1.0, 0.2, confirm=refuse) is None  # not even a very confident face
    assert not v.settled
    change = v.observe("ann", 0.93, None, 1.0, 0.3, confirm=lambda name: True)
    assert change.name == "ann" and v.settled


def test_a_withdrawn_name_never_comes_back():
    v = TrackIdentity(VotingConfig(confirm_votes=2), threshold=0.9)
    v.observe("ann", 0.95, None, 1.0, 0.0)
    v.observe("ann", 0.95, None, 1.0, 0.1)
    assert v.name == "ann" and v.withdraw("ann") and v.name is None and not v.settled
    for i in range(5):
        assert v.observe("ann", 0.99, None, 1.0, 1.0 + i) is None
    assert v.name is None and not v.withdraw("carl")  # not its name: nothing changes
    v.observe("bob", 0.92, None, 5.0, 7.0)
    assert v.observe("bob", 0.92, None, 5.0, 7.1).name == "bob"  # another person still can
