"""What `argusnet bench faults` judges from the events it collected (the runs themselves take minutes: the
benchmark is run by hand, its numbers go to BENCHMARKS.md): a walk of the demo face split by a fault is two tracks
in one walk; a live event the durable log lacks is missing, counted as often as it was seen."""

from __future__ import annotations

from bench.faults import CAMERA, Seen, Timeline, measure, missing, tracks_of, walks
from camera_node.demo import PERIOD_S
from shared.protocol import TrackEvent

T0 = 1_700_000_000.0  # the first walk's middle


def track(number: int, first: float, last: float, ended: bool = True, epoch: int = 1) -> list[TrackEvent]:
    def event(kind: str, ts: float) -> TrackEvent:
        named = kind != "track_started"
        return TrackEvent(type=kind, camera=CAMERA, track=number, name="Astronaut" if named else None,
                          similarity=0.8 if named else None, margin=None, ts=ts, capture_ts=ts, box=None,
                          time_to_name_ms=None, duration_s=ts - first, visitor=False, worker="w1", epoch=epoch)

    events = [event("track_started", first), event("track_identified", first + 0.5)]
    return events + [event("track_ended", last)] if ended else events


def walk_tracks(split: int | None) -> list[TrackEvent]:
    """Four walks of about 8 s each (middles T0 + 12 k); walk ``split`` as two tracks with a 1 s gap."""
    events: list[TrackEvent] = []
    for k in range(4):
        middle = T0 + k * PERIOD_S
        if k == split:
            events += track(10 * k, middle - 4.0, middle - 0.5) + track(10 * k + 1, middle + 0.5, middle + 4.0)
        else:
            events += track(10 * k, middle - 4.0, middle + 4.0)
    return events + track(99, T0 + 4 * PERIOD_S - 4.0, T0 + 4 * PERIOD_S - 2.0, ended=False)  # still live


def test_every_walk_wholly_in_the_run_has_its_tracks_counted():
    got = walks(tracks_of(walk_tracks(split=None)), T0 - 6.0, T0 + 3 * PERIOD_S + 6.0)
    assert [w["tracks"] for w in got] == [1, 1, 1, 1]
    assert [w["track_durations_s"] for w in got] == [[8.0]] * 4
    later = walks(tracks_of(walk_tracks(split=None)), T0 + 1.0, T0 + 3 * PERIOD_S + 6.0)  # the first walk cut
    assert [w["tracks"] for w in later] == [1, 1, 1]


def test_a_walk_split_by_a_fault_is_two_tracks_in_one_walk():
    got = walks(tracks_of(walk_tracks(split=2)), T0 - 6.0, T0 + 3 * PERIOD_S + 6.0)
    assert [w["tracks"] for w in got] == [1, 1, 2, 1]
    assert got[2]["track_durations_s"] == [3.5, 3.5]


def test_live_events_missing_from_the_log_are_counted_each_time():
    logged = walk_tracks(split=None)
    seen = [Seen(e, e.ts) for e in logged]
    assert missing(seen, logged) == []
    lost = logged[4]
    assert missing(seen, logged[:4] + logged[5:]) == [(CAMERA, lost.track, lost.type)]
    assert missing(seen + [seen[4]], logged) == [(CAMERA, lost.track, lost.type)]  # seen twice, logged once


def test_the_targets_fail_on_a_split_walk_a_lost_event_a_new_epoch_and_a_pause():
    logged = walk_tracks(split=1) + track(50, T0 + 5 * PERIOD_S, T0 + 5 * PERIOD_S + 0.5, epoch=2)  # after the run
    seen = [Seen(e, e.ts) for e in logged]
    times = Timeline(first_event=T0 - 6.0, fault_start=T0 + 6.0, fault_end=T0 + 26.0, drained=T0 + 40.0,
                     snapshot=T0 + 3 * PERIOD_S + 6.0)
    counters = {"store_buffer_max": {"events": 3.0}, "frames_dropped": {"stale": 2.0},
                "store_dropped": {"events": 0.0}, "events_dropped": {}, "store_errors": {}}
    log = {"lines": 9, "warnings": 2, "tracebacks": 0, "paused": 1}
    out = measure(times, seen, logged[1:], counters, log)
    assert out["targets"] == {"no_live_event_missing_from_log": False, "no_processing_error_drop": True,
                              "no_stale_drop": False, "no_store_buffer_drop": True, "every_walk_one_track": False,
                              "one_epoch": False, "worker_never_paused": False, "no_traceback_in_worker_log": True}
    assert [w["during_fault"] for w in out["walks"]] == [False, True, True, False]
