"""`argusnet store migrate`: local -> Redis -> local keeps persons, negative evidence, visitors (numbers, faces,
rejections, merges), crops and the event log; bad input is refused with exit 2."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from identity.merges import merge_visitor
from shared.errors import InputError
from shared.protocol import TrackEvent
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig
from store.migrate import check_empty, read_events
from store.types import EventRecord, FaceSample

DIM = 128
MODEL = "dlib_resnet_v1"


def face(rng: np.random.Generator, source: str = "photo.jpg") -> FaceSample:
    v = rng.standard_normal(DIM).astype(np.float32)
    crop = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return FaceSample((v / np.linalg.norm(v)).astype(np.float32), crop,
                      rng.random((5, 2), dtype=np.float32) * 32, source)


def event(kind: str, track: int, name: str | None, capture_ts: float, visitor: bool = False,
          merged: str | None = None) -> TrackEvent:
    return TrackEvent(type=kind, camera="cam-a", track=track, name=name, similarity=0.95 if name else None,
                      margin=0.1 if name else None, ts=capture_ts + 0.05, capture_ts=capture_ts,
                      box=(1.0, 2.0, 30.0, 40.0), time_to_name_ms=None, duration_s=None, visitor=visitor,
                      merged_visitor=merged)


def open_local(path, create: bool = True):
    return open_store(LocalStoreConfig(path=path), GalleryConfig(), MODEL, DIM, create=create)


def build_source(path) -> None:
    """Persons Ada (3 faces) and Bob (2); negative evidence for Ada (2 faces) and for Cy, who is not enrolled (1);
    visitor-1 (2 faces, not Ada), visitor-2 merged into Bob, visitor-3 expired (events still name it), visitor-4;
    events naming all of them, two with crops."""
    rng = np.random.default_rng(11)
    with open_local(path) as store:
        store.persons.add_person("Ada", [face(rng) for _ in range(3)])
        store.persons.add_person("Bob", [face(rng) for _ in range(2)])
        store.negatives.add("Ada", [face(rng, "camera:cam-a/track:5"), face(rng, "camera:cam-a/track:6")])
        store.negatives.add("Cy", [face(rng, "camera:cam-a/track:7")])
        names = [store.visitors.match_or_create([face(rng, "camera:cam-a/track:1"), face(rng)], 2.0, 5).visitor
                 for _ in range(3)]
        assert names == ["visitor-1", "visitor-2", "visitor-3"]
        mark = time.time()
        for visitor in names[:2]:
            store.visitors.seen(visitor, [], 5, when=mark + 1.0)
        assert store.visitors.expire(mark + 0.5) == ["visitor-3"]
        assert store.visitors.match_or_create([face(rng)], 2.0, 5).visitor == "visitor-4"
        store.visitors.reject("visitor-1", "Ada")
        t = 1_700_000_000.0
        store.media.put_crop("cam-a", 1, face(rng).crop, when=t)
        store.media.put_crop("cam-a", 2, face(rng).crop, when=t)
        store.events.append([EventRecord(event("track_started", 1, "visitor-1", t, visitor=True), worker="w1"),
                             EventRecord(event("track_started", 2, "visitor-2", t + 1, visitor=True)),
                             EventRecord(event("track_identified", 3, "visitor-3", t + 1, visitor=True)),
                             EventRecord(event("track_ended", 1, "visitor-1", t + 2, visitor=True), crop="cam-a/1"),
                             EventRecord(event("track_started", 4, None, t + 2))])
        merge_visitor(store, "visitor-2", "Bob")
        store.events.append([EventRecord(event("track_identified", 2, "Bob", t + 3, merged="visitor-2")),
                             EventRecord(event("track_ended", 2, "Bob", t + 4), crop="cam-a/2"),
                             EventRecord(event("track_ended", 9, None, t + 5), crop="cam-a/9")])  # crop gone


def snapshot(store) -> dict:
    """Everything the migration promises to keep, without ids and times it may not keep."""
    def faces(fs):
        return [(f.person, f.embedding.tobytes(), f.landmarks.tobytes(), f.source, f.crop.shape) for f in fs]

    events = read_events(store.events)
    crops = sorted({e.crop for e in events if e.crop})
    return {"persons": [(p.name, p.faces) for p in store.persons.persons()],
            "person_faces": faces(store.persons.all_faces()),
            "negatives": store.negatives.counts(),
            "negative_faces": faces(store.negatives.all_faces()),
            "visitors": [(v.visitor, v.faces, v.rejected) for v in store.visitors.list()],
            "visitor_faces": faces(store.visitors.all_faces()),
            "merges": {f"visitor-{n}": store.visitors.merged_into(f"visitor-{n}") for n in range(1, 6)},
            "events": [(e.event, e.crop, e.worker) for e in events],
            "crops": {k: _crop_or_none(store, k) for k in crops}}


def _crop_or_none(store, key: str) -> bool:
    try:
        return store.media.get_crop(key)[:2] == b"\xff\xd8"
    except KeyError:
        return False


def assert_same_store(a_path, b_path) -> None:
    with open_local(a_path, create=False) as a, open_local(b_path, create=False) as b:
        want, got = snapshot(a), snapshot(b)
        assert got == want
        assert want["merges"]["visitor-2"] == "Bob" and want["merges"]["visitor-3"] is None
        assert want["negatives"] == {"Ada": 2, "Cy": 1}
        assert [f[3] for f in want["negative_faces"]] == [f"camera:cam-a/track:{t}" for t in (5, 6, 7)]
        assert [v[0] for v in want["visitors"]] == ["visitor-1", "visitor-4"]
        # the visitor counter went on from the source's numbers: the next stranger is visitor-5
        assert b.visitors.match_or_create([face(np.random.default_rng(5))], 2.0, 5).visitor == "visitor-5"


EXPECTED_COPY = {"persons": 2, "person_faces": 5, "negatives": 2, "negative_faces": 3, "visitors": 2, "visitor_faces": 3, "rejections": 1, "merges": 1,
                 "events": 8, "crops": 2, "crops_missing_in_source": 1}


def test_local_to_local_copy_is_equal(tmp_path, cli):
    build_source(tmp_path / "a")
    r = cli("store", "migrate", "--from", f"local:{tmp_path / 'a'}", "--to", f"local:{tmp_path / 'b'}", "--json")
    assert r.code == 0, r.err + r.out
    report = json.loads(r.out)
    assert report["ok"] and report["renamed_visitors"] == {} and report["copied"] == EXPECTED_COPY
    assert all(c["ok"] for c in report["checks"]) and report["not_copied"]
    checked = {c["name"]: (c["source"], c["destination"]) for c in report["checks"]}
    assert checked["negatives"] == (2, 2) and checked["negatives: byte-equal embeddings"] == (3, 3)
    assert_same_store(tmp_path / "a", tmp_path / "b")


def redis_cfg(redis_url: str, name: str) -> RedisStoreConfig:
    return RedisStoreConfig(url=redis_url, prefix=f"{name}{time.time_ns()}")


def test_local_to_redis_to_local_round_trip(tmp_path, cli, redis_url):
    build_source(tmp_path / "a")
    prefix = redis_cfg(redis_url, "migrate").prefix
    r = cli("store", "migrate", "--from", f"local:{tmp_path / 'a'}", "--to", redis_url, "--to-prefix", prefix,
            "--json")
    assert r.code == 0, r.err + r.out
    report = json.loads(r.out)
    assert report["ok"] and report["renamed_visitors"] == {} and report["copied"] == EXPECTED_COPY
    r = cli("store", "migrate", "--from", redis_url, "--from-prefix", prefix, "--to", f"local:{tmp_path / 'b'}")
    assert r.code == 0, r.err + r.out
    assert "verified: the copy matches" in r.out and "FAIL" not in r.out
    assert_same_store(tmp_path / "a", tmp_path / "b")


def test_events_are_read_whole_oldest_first_through_small_pages(tmp_path):
    with open_local(tmp_path / "s") as store:
        t = 1_700_000_000.0
        stamps = [t + 5.0] * 2 + [t] * 3 + [t + (i + 1) * 0.25 for i in range(16)] + [t + 5.0]
        store.events.append([EventRecord(event("track_started", i, None, ts)) for i, ts in enumerate(stamps)])
        for page in (1, 3, 4, 100):  # many events share one capture time: paging is by id, never by time
            assert [e.event.track for e in read_events(store.events, page=page)] == list(range(len(stamps)))


def test_bad_input_is_refused_with_exit_2(tmp_path, cli, redis_url):
    build_source(tmp_path / "a")
    cases = [("--from", "ftp://host/x", "--to", f"local:{tmp_path / 'b'}"),
             ("--from", "redis://127.0.0.1:6379/not-a-db", "--to", f"local:{tmp_path / 'b'}"),
             ("--from", "local:", "--to", f"local:{tmp_path / 'b'}"),
             ("--from", f"local:{tmp_path / 'missing'}", "--to", f"local:{tmp_path / 'b'}"),
             ("--from", redis_url, "--from-prefix", f"empty{time.time_ns()}", "--to", f"local:{tmp_path / 'b'}"),
             ("--from", f"local:{tmp_path / 'a'}", "--to", f"local:{tmp_path / 'a'}"),
             ("--from", f"local:{tmp_path / 'a'}", "--to", "redis://10.1.2.3:6379/0")]
    for args in cases:
        r = cli("store", "migrate", *args)
        assert r.code == 2 and r.err.startswith("argusnet: error: ") and "Traceback" not in r.err, (args, r.err)
    assert not (tmp_path / "b").exists()  # nothing was created for a refused source
    assert cli("store", "migrate", "--from", f"local:{tmp_path / 'a'}", "--to", f"local:{tmp_path / 'b'}").code == 0
    r = cli("store", "migrate", "--from", f"local:{tmp_path / 'a'}", "--to", f"local:{tmp_path / 'b'}")
    assert r.code == 2 and "is not empty" in r.err


def test_a_destination_holding_only_negative_evidence_is_not_empty(tmp_path):
    with open_local(tmp_path / "d") as dst:
        check_empty(dst)
        dst.negatives.add("Ada", [face(np.random.default_rng(3))])
        with pytest.raises(InputError, match="1 negative face"):
            check_empty(dst)
