"""The store contract: every backend (``store.type``) must pass every test here (boxmot-style contract tests).

Parametrised over ``BACKENDS``. Each test opens a fresh store through `store.open_store`, exactly as the CLI, the
workers and the dashboard do: a local store in the test's temporary directory, or a Redis store on the session's
redis-server (`tests/redis_server.py`) under a key prefix of its own, derived from that directory (so a process
the test spawns finds the same store from the same arguments).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import redis

from identity.merges import merge_visitor, promote_visitor, remove_person, unmerge_visitor
from shared.errors import GalleryError
from shared.protocol import TrackEvent
from store import open_store
from store.base import Store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig, RetentionConfig, VisitorConfig
from store.retention import RetentionJob
from store.types import CameraStatus, EventQuery, EventRecord, FaceSample, LiveTrack

DIM = 32
MODEL = "test_model"
BACKENDS = ["local", "redis"]
REDIS_URL_ENV = "ARGUSNET_TEST_REDIS_URL"  # tests/redis_server.URL_ENV, set by the redis_url fixture


def store_config(backend: str, where: Path):
    if backend == "local":
        return LocalStoreConfig(path=where / "store")
    if backend == "redis":
        prefix = "t" + hashlib.sha256(str(where).encode()).hexdigest()[:16]
        return RedisStoreConfig(url=os.environ[REDIS_URL_ENV], prefix=prefix)
    raise ValueError(backend)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    return request.param


@pytest.fixture
def opener(backend, tmp_path):
    opened: list[Store] = []

    def open_(create: bool = True, model: str | None = MODEL, gallery: GalleryConfig | None = None) -> Store:
        store = open_store(store_config(backend, tmp_path), gallery or GalleryConfig(), model, DIM, create=create)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def face(vector: np.ndarray, source: str = "photo.jpg", shade: int = 100) -> FaceSample:
    return FaceSample(vector, np.full((48, 40, 3), shade, np.uint8), np.arange(10, dtype=np.float32).reshape(5, 2),
                      source)


def near(rng: np.random.Generator, v: np.ndarray, noise: float = 0.02) -> np.ndarray:
    out = v + noise * rng.standard_normal(v.shape).astype(np.float32)
    return (out / np.linalg.norm(out)).astype(np.float32)


def event(kind: str, camera: str, track: int, ts: float, name: str | None = None, visitor: bool = False) -> TrackEvent:
    return TrackEvent(type=kind, camera=camera, track=track, name=name, similarity=0.9 if name else None, margin=None,
                      ts=ts, capture_ts=ts, box=(1.0, 2.0, 30.0, 40.0), time_to_name_ms=None, duration_s=0.0,
                      visitor=visitor)


# ------------------------------------------------------------------------------------------------ persons
def test_add_search_remove(opener):
    rng = np.random.default_rng(1)
    store = opener()
    alice, bob = unit(rng, 2), unit(rng, 1)
    ids = store.persons.add_person("alice", [face(v) for v in alice])
    store.persons.add_person("bob", [face(bob[0])])
    assert len(ids) == 2 and store.persons.face_count == 3
    hits = store.persons.search(alice[1:2], 5)[0]
    assert [h.name for h in hits] == ["alice", "bob"] and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert [p.name for p in store.persons.persons()] == ["alice", "bob"]
    assert [f.source for f in store.persons.faces_of("alice")] == ["photo.jpg", "photo.jpg"]
    assert store.persons.remove_person("alice") == 2
    assert [h.name for h in store.persons.search(alice[1:2], 5)[0]] == ["bob"]
    with pytest.raises(GalleryError, match="no person named 'alice'"):
        store.persons.remove_person("alice")
    with pytest.raises(GalleryError, match="no person named 'nobody'"):
        store.persons.faces_of("nobody")


def test_persistence_across_reopen_and_model_guard(opener):
    rng = np.random.default_rng(2)
    first = opener()
    vector = unit(rng)
    first.persons.add_person("carol", [face(vector[0])])
    first.close()
    again = opener(create=False)
    assert again.persons.search(vector, 1)[0][0].name == "carol"
    stored = again.persons.faces_of("carol")[0]
    assert np.allclose(stored.embedding, vector[0]) and stored.crop.shape == (48, 40, 3)
    with pytest.raises(GalleryError, match="configured embedder is other_model"):
        opener(create=False, model="other_model")


def test_a_missing_store_is_refused_unless_created(opener):
    with pytest.raises(GalleryError, match="no gallery"):
        opener(create=False)


def test_changes_of_another_opener_are_picked_up_by_sync(opener):
    rng = np.random.default_rng(3)
    reader, writer = opener(), opener()
    vector = unit(rng)
    assert not reader.persons.sync()
    writer.persons.add_person("dave", [face(vector[0])])
    assert reader.persons.sync()
    assert reader.persons.search(vector, 1)[0][0].name == "dave"


# ------------------------------------------------------------------------------------------------ visitors
def test_match_or_create_matches_or_mints_and_keeps_max_faces(opener):
    rng = np.random.default_rng(4)
    store = opener()
    base = unit(rng)[0]
    made = store.visitors.match_or_create([face(base), face(near(rng, base)), face(near(rng, base))], 0.9, 2)
    assert (made.visitor, made.created, made.similarity) == ("visitor-1", True, None)
    again = store.visitors.match_or_create([face(near(rng, base))], 0.9, 2)
    assert again.visitor == "visitor-1" and not again.created and again.similarity > 0.9
    other = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 2)
    assert other.visitor == "visitor-2" and other.created
    listed = {v.visitor: v for v in store.visitors.list()}
    assert listed["visitor-1"].faces == 2
    store.visitors.seen("visitor-2", [face(unit(rng)[0]), face(unit(rng)[0])], max_faces=2)
    assert {v.visitor: v.faces for v in store.visitors.list()} == {"visitor-1": 2, "visitor-2": 2}
    store.visitors.seen("visitor-99", [face(unit(rng)[0])], max_faces=2)  # gone meanwhile: left alone
    assert len(store.visitors.list()) == 2


def _match_or_create_at(backend: str, where: str, start_at: float, seed: int) -> str:
    """In a fresh process: wait for the common instant, then match_or_create the same stranger."""
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    base /= np.linalg.norm(base)
    store = open_store(store_config(backend, Path(where)), GalleryConfig(), MODEL, DIM)
    try:
        time.sleep(max(0.0, start_at - time.time()))
        return store.visitors.match_or_create([face(near(rng, base))], 0.9, 5).visitor
    finally:
        store.close()


def test_two_processes_creating_the_same_visitor_at_once_make_exactly_one(opener, backend, tmp_path):
    opener().close()  # the store exists; its visitor part is empty
    start_at = time.time() + 3.0
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        names = list(pool.map(_match_or_create_at, [backend] * 4, [str(tmp_path)] * 4, [start_at] * 4, range(4)))
    assert names == ["visitor-1"] * 4
    assert [v.visitor for v in opener(create=False).visitors.list()] == ["visitor-1"]


def test_rejections_and_promotion(opener):
    rng = np.random.default_rng(5)
    store = opener()
    vector = unit(rng)[0]
    visitor = store.visitors.match_or_create([face(vector)], 0.9, 5).visitor
    store.visitors.reject(visitor, "eve")
    assert store.visitors.rejections() == {visitor: frozenset({"eve"})}
    with pytest.raises(GalleryError, match="no person named 'visitor-7'"):
        store.visitors.reject("visitor-7", "eve")
    store.events.append([EventRecord(event("track_identified", "cam", 1, 100.0, visitor, visitor=True))])
    report = promote_visitor(store, visitor, "Frank")
    assert (report.faces_added, report.faces_removed, report.events) == (1, 1, 1)
    assert store.persons.search(vector[None], 1)[0][0].name == "Frank"
    assert store.visitors.list() == [] and store.visitors.merged_into(visitor) == "Frank"
    assert [e.event.name for e in store.events.query(EventQuery(identity="Frank"))] == ["Frank"]
    with pytest.raises(GalleryError, match="not a visitor id"):
        promote_visitor(store, "Frank", "George")


def test_merge_moves_history_to_the_person_and_the_visitor_stops_answering(opener):
    rng = np.random.default_rng(6)
    store = opener()
    person = unit(rng)[0]
    store.persons.add_person("Grace", [face(person)])
    visitor = store.visitors.match_or_create([face(near(rng, person, 0.2))], 0.9, 5).visitor
    store.events.append([EventRecord(event("track_started", "cam", 5, 100.0)),
                         EventRecord(event("track_identified", "cam", 5, 101.0, visitor, visitor=True))])
    store.live.put(LiveTrack("cam", 5, visitor, True, None, (0, 0, 9, 9), 100.0, 101.0), ttl_s=30)
    report = merge_visitor(store, visitor, "Grace")
    assert (report.faces_added, report.faces_removed, report.events, report.live_tracks) == (0, 1, 1, 1)
    again = store.visitors.match_or_create([face(near(rng, person, 0.2))], 0.9, 5)
    assert again.visitor != visitor and again.created  # the merged visitor's faces no longer answer
    named = store.events.query(EventQuery(identity="Grace"))
    assert [(e.event.type, e.event.visitor) for e in named] == [("track_identified", False)]
    assert store.events.query(EventQuery(identity=visitor)) == []
    assert [(t.name, t.visitor) for t in store.live.alive()] == [("Grace", False)]


# ------------------------------------------------------------------------------------------------ negative evidence
def drop_negatives(backend: str, where: Path) -> None:
    """What a store made before negative evidence existed looks like: no negatives gallery at all."""
    if backend == "local":
        shutil.rmtree(where / "store" / "negatives")
        return
    cfg = store_config(backend, where)
    client = redis.Redis.from_url(cfg.url)
    try:
        keys = list(client.scan_iter(match=f"{cfg.prefix}:negatives:*"))
        assert keys  # the gallery was there: this removes it
        client.delete(*keys)
    finally:
        client.close()


def test_negatives_add_search_faces_of_remove_face_erase_counts(opener):
    rng = np.random.default_rng(20)
    store = opener()
    ann, bob = unit(rng, 3), unit(rng, 1)
    store.persons.add_person("Ann", [face(unit(rng)[0])])
    ids = store.negatives.add("Ann", [face(v, f"camera:cam/track:{i}") for i, v in enumerate(ann)])
    assert len(ids) == 3 and len(set(ids)) == 3
    assert store.negatives.add("Bob", [face(bob[0])]) != ids
    assert store.negatives.counts() == {"Ann": 3, "Bob": 1}
    assert [p.name for p in store.persons.persons()] == ["Ann"]  # the person gallery is untouched
    hits = store.negatives.search(np.stack([ann[1], bob[0]]), 5)
    assert [h.name for h in hits[0]] == ["Ann", "Bob"] and hits[0][0].face_id == ids[1]
    assert hits[0][0].similarity == pytest.approx(1.0, abs=1e-5) and hits[1][0].name == "Bob"
    faces = store.negatives.faces_of("Ann")
    assert [f.face_id for f in faces] == ids and [f.source for f in faces][1] == "camera:cam/track:1"
    assert np.allclose(faces[2].embedding, ann[2]) and faces[0].crop.shape == (48, 40, 3)
    assert store.negatives.faces_of("Nobody") == []
    assert store.negatives.remove_face("Ann", ids[1])
    assert not store.negatives.remove_face("Ann", ids[1])  # gone already
    assert not store.negatives.remove_face("Bob", ids[0])  # a face of another person
    assert not store.negatives.remove_face("Nobody", ids[0])
    assert store.negatives.search(ann[1:2], 5)[0][0].face_id != ids[1]
    assert store.negatives.counts() == {"Ann": 2, "Bob": 1}
    assert store.negatives.erase("Ann") == 2 and store.negatives.erase("Ann") == 0
    assert store.negatives.counts() == {"Bob": 1} and store.negatives.faces_of("Ann") == []
    assert [h.name for h in store.negatives.search(ann, 5)[0]] == ["Bob"]
    only = store.negatives.faces_of("Bob")[0].face_id
    assert store.negatives.remove_face("Bob", only) and store.negatives.counts() == {}  # the last face takes the name
    assert store.negatives.search(bob, 3) == [[]] and len(store.negatives.all_faces()) == 0


def test_negatives_refuse_empty_names_visitor_ids_and_no_faces(opener):
    rng = np.random.default_rng(21)
    store = opener()
    for name in ("", "   ", "visitor-3"):
        with pytest.raises(GalleryError):
            store.negatives.add(name, [face(unit(rng)[0])])
    with pytest.raises(GalleryError, match="no faces"):
        store.negatives.add("Ann", [])
    with pytest.raises(ValueError, match="shape"):  # another embedder's vectors: nothing written
        store.negatives.add("Ann", [face(unit(rng)[0]), face(np.ones(DIM + 1, np.float32))])
    assert store.negatives.counts() == {} and store.negatives.all_faces() == []


def test_negatives_reach_another_opener_on_sync_and_survive_reopen(opener):
    rng = np.random.default_rng(22)
    reader, writer = opener(), opener()
    vectors = unit(rng, 2)
    assert not reader.negatives.sync()
    ids = writer.negatives.add("Cleo", [face(v) for v in vectors])
    assert reader.negatives.search(vectors[:1], 1) == [[]]  # not before sync
    assert reader.negatives.sync()
    assert reader.negatives.search(vectors[:1], 1)[0][0].name == "Cleo"
    assert reader.negatives.counts() == {"Cleo": 2}
    assert writer.negatives.remove_face("Cleo", ids[0])
    assert reader.negatives.sync()
    assert [h.face_id for h in reader.negatives.search(vectors[:1], 2)[0]] == [ids[1]]
    writer.close()
    reader.close()
    again = opener(create=False)
    assert again.negatives.counts() == {"Cleo": 1}
    assert again.negatives.search(vectors[1:], 1)[0][0].face_id == ids[1]
    assert again.negatives.model == MODEL


def test_removing_a_face_of_an_hnsw_gallery_keeps_the_index_right(opener):
    rng = np.random.default_rng(23)
    small = GalleryConfig(hnsw_above=2)
    store = opener(gallery=small)
    vectors = unit(rng, 6)
    ids = store.negatives.add("Dan", [face(v) for v in vectors])
    for face_id in ids[:2]:
        assert store.negatives.remove_face("Dan", face_id)
    assert all(h.face_id in ids[2:] for hits in store.negatives.search(vectors[:2], 6) for h in hits)
    found = store.negatives.search(vectors, 1)
    assert [hits[0].face_id if hits else None for hits in found][2:] == ids[2:]
    store.close()
    again = opener(create=False, gallery=small)
    assert again.negatives.counts() == {"Dan": 4}
    assert [hits[0].face_id for hits in again.negatives.search(vectors[2:], 1)] == ids[2:]


def test_a_store_made_before_negative_evidence_opens_and_gets_it(opener, backend, tmp_path):
    rng = np.random.default_rng(24)
    first = opener()
    vector = unit(rng)
    first.persons.add_person("Eve", [face(vector[0])])
    first.close()
    drop_negatives(backend, tmp_path)
    old = opener(create=False)
    assert old.persons.search(vector, 1)[0][0].name == "Eve"
    assert old.negatives.counts() == {} and old.negatives.model == MODEL
    old.negatives.add("Eve", [face(vector[0])])
    old.close()
    assert opener(create=False).negatives.counts() == {"Eve": 1}


def test_removing_a_person_erases_their_negative_evidence(opener):
    rng = np.random.default_rng(25)
    store = opener()
    store.persons.add_person("Fay", [face(v) for v in unit(rng, 2)])
    store.negatives.add("Fay", [face(unit(rng)[0])])
    store.negatives.add("Gus", [face(unit(rng)[0])])
    with pytest.raises(GalleryError, match="no person named 'Gus'"):
        remove_person(store, "Gus")  # nobody enrolled so: nothing changes
    assert store.negatives.counts() == {"Fay": 1, "Gus": 1}
    removed = remove_person(store, "Fay")
    assert (removed.faces, removed.negatives) == (2, 1)
    assert store.persons.persons() == [] and store.negatives.counts() == {"Gus": 1}


def test_negatives_follow_the_persons_embedder_through_a_reembed(opener):
    rng = np.random.default_rng(26)
    store = opener()
    store.persons.add_person("Hal", [face(unit(rng)[0])])
    store.negatives.add("Hal", [face(unit(rng)[0])])
    for part in (store.persons, store.visitors):  # a reembed that stopped before the negatives
        part.replace_embeddings("model_2", DIM, {f.face_id: unit(rng)[0] for f in part.all_faces()})
    store.close()
    with pytest.raises(GalleryError, match="negative.*holds test_model embeddings"):
        opener(create=False, model="model_2")
    store = opener(create=False, model=None)
    fresh = {f.face_id: unit(rng)[0] for f in store.negatives.all_faces()}
    store.negatives.replace_embeddings("model_2", DIM, fresh)
    store.close()
    again = opener(create=False, model="model_2")
    assert again.negatives.model == "model_2"
    (face_id, vector), = fresh.items()
    assert again.negatives.search(vector[None], 1)[0][0].face_id == face_id


def test_forget_erases_a_name_that_only_negative_evidence_holds(opener):
    from identity.erasure import forget

    rng = np.random.default_rng(27)
    store = opener()
    store.negatives.add("Ivy", [face(v) for v in unit(rng, 2)])
    report = forget(store, "Ivy")
    assert (report.negatives, report.faces, report.left) == (2, 0, ())
    assert store.negatives.counts() == {}
    with pytest.raises(GalleryError, match="holds nothing of 'Ivy'"):
        forget(store, "Ivy")


# ------------------------------------------------------------------------------------------------ unmerge
def _merged_visitor_with_history(store: Store, rng: np.random.Generator) -> dict:
    """Grace enrolled with events of her own; a visitor with two faces, events (one with a crop) and a live track,
    plus an event naming nobody; everything as logged before a merge."""
    grace = unit(rng)[0]
    store.persons.add_person("Grace", [face(grace)])
    base = unit(rng)[0]
    visitor = store.visitors.match_or_create([face(base, "camera:cam/track:5", 60),
                                              face(near(rng, base), "camera:cam/track:5", 70)], 0.9, 5).visitor
    crop = store.media.put_crop("cam", 5, np.full((20, 20, 3), 7, np.uint8))
    store.events.append([EventRecord(event("track_started", "cam", 5, 100.0)),
                         EventRecord(event("track_identified", "cam", 5, 101.0, visitor, visitor=True), worker="w1"),
                         EventRecord(event("track_identified", "cam", 6, 102.0, "Grace")),
                         EventRecord(event("track_ended", "cam", 5, 103.0, visitor, visitor=True), crop=crop)])
    store.live.put(LiveTrack("cam", 5, visitor, True, 0.93, (0, 0, 9, 9), 100.0, 103.0, crop=crop), ttl_s=60)
    store.live.put(LiveTrack("cam", 6, "Grace", False, 0.9, None, 100.0, 103.0), ttl_s=60)
    return {"visitor": visitor, "base": base, "events": store.events.query(EventQuery()),
            "faces": store.visitors.faces_of(visitor), "live": store.live.alive(),
            "listed": store.visitors.list(), "grace": store.persons.faces_of("Grace")}


def test_unmerge_restores_the_visitor_its_faces_events_and_live_tracks_exactly(opener):
    rng = np.random.default_rng(12)
    store = opener()
    before = _merged_visitor_with_history(store, rng)
    visitor = before["visitor"]
    merged = merge_visitor(store, visitor, "Grace")
    assert (merged.faces_removed, merged.events, merged.live_tracks) == (2, 2, 1)
    assert store.visitors.list() == []
    undo = store.visitors.merge_undo(visitor)
    assert (undo.person, undo.faces, undo.blocked, undo.person_faces) == ("Grace", 2, None, ())
    report = unmerge_visitor(store, visitor, "cli:tester")
    assert (report.person, report.faces_restored, report.person_faces_removed, report.events,
            report.live_tracks) == ("Grace", 2, 0, 2, 1)
    assert store.events.query(EventQuery()) == before["events"]  # every event, field by field, as before the merge
    assert [e.id for e in store.events.query(EventQuery(identity=visitor))] == [4, 2]
    assert [e.event.track for e in store.events.query(EventQuery(identity="Grace"))] == [6]
    after = store.visitors.faces_of(visitor)
    assert len(after) == len(before["faces"])
    for was, now in zip(before["faces"], after):
        assert np.array_equal(was.embedding, now.embedding) and np.array_equal(was.landmarks, now.landmarks)
        assert (was.source, was.created) == (now.source, now.created) and was.crop.shape == now.crop.shape
    assert store.visitors.list() == before["listed"]  # created and last seen as they were
    assert store.live.alive() == before["live"]
    assert store.persons.faces_of("Grace")[0].face_id == before["grace"][0].face_id
    assert store.visitors.merged_into(visitor) is None and store.visitors.merge_undo(visitor) is None
    again = store.visitors.match_or_create([face(near(rng, before["base"]))], 0.9, 5)
    assert (again.visitor, again.created) == (visitor, False)  # searchable again
    last = store.audit.list()[-1]
    assert (last.action, last.actor, last.subject, last.details["visitor"]) == ("unmerge", "cli:tester", "Grace",
                                                                                visitor)


def test_unmerge_after_a_reopen_and_new_events_of_the_person(opener):
    rng = np.random.default_rng(13)
    store = opener()
    before = _merged_visitor_with_history(store, rng)
    merge_visitor(store, before["visitor"], "Grace")
    store.events.append([EventRecord(event("track_identified", "cam", 7, 104.0, "Grace"))])
    store.close()
    store = opener(create=False)
    report = unmerge_visitor(store, before["visitor"], "cli:tester")
    assert report.events == 2
    assert store.events.query(EventQuery())[1:] == before["events"]
    assert [e.event.track for e in store.events.query(EventQuery(identity="Grace"))] == [7, 6]
    assert len(store.visitors.faces_of(before["visitor"])) == 2


def test_promote_then_unmerge_takes_back_exactly_the_faces_it_added(opener):
    rng = np.random.default_rng(14)
    store = opener()
    own = unit(rng)[0]
    store.persons.add_person("Frank", [face(own)])
    first = store.visitors.match_or_create([face(unit(rng)[0]), face(unit(rng)[0])], 0.9, 5).visitor
    second = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    store.events.append([EventRecord(event("track_identified", "cam", 1, 100.0, first, visitor=True))])
    assert promote_visitor(store, first, "Frank").faces_added == 2
    assert promote_visitor(store, second, "Hank").faces_added == 1
    assert store.visitors.merge_undo(first).person_faces == tuple(f.face_id for f in store.persons.faces_of("Frank")[1:])
    with pytest.raises(GalleryError, match="merged into Frank already"):
        promote_visitor(store, first, "Ivan")
    report = unmerge_visitor(store, first, "cli:tester")
    assert (report.faces_restored, report.person_faces_removed, report.events) == (2, 2, 1)
    assert [np.allclose(f.embedding, own) for f in store.persons.faces_of("Frank")] == [True]
    assert store.persons.search(own[None], 1)[0][0].name == "Frank"
    assert unmerge_visitor(store, second, "cli:tester").person_faces_removed == 1
    assert [p.name for p in store.persons.persons()] == ["Frank"]  # Hank was made by the promote: gone with it
    assert sorted(v.visitor for v in store.visitors.list()) == sorted([first, second])
    assert store.persons.face_count == 1


def test_unmerge_refuses_what_was_never_merged_or_can_no_longer_be_undone(opener):
    rng = np.random.default_rng(15)
    store = opener()
    visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    with pytest.raises(GalleryError, match=f"{visitor} is not merged into anyone"):
        unmerge_visitor(store, visitor, "cli:tester")
    with pytest.raises(GalleryError, match="visitor-99 is not merged"):
        unmerge_visitor(store, "visitor-99", "cli:tester")
    with pytest.raises(GalleryError, match="not a visitor id"):
        unmerge_visitor(store, "Grace", "cli:tester")
    store.persons.add_person("Grace", [face(unit(rng)[0])])
    merge_visitor(store, visitor, "Grace")
    RetentionJob(store, RetentionConfig(), VisitorConfig(retention_h=1.0)).run_once(now=time.time() + 7200)
    assert store.visitors.merged_into(visitor) == "Grace"  # the merge stands; what could undo it is gone
    assert store.visitors.merge_undo(visitor).faces == 0
    with pytest.raises(GalleryError, match="can no longer be undone: the faces .* were deleted"):
        unmerge_visitor(store, visitor, "cli:tester")
    assert store.visitors.merged_into(visitor) == "Grace" and store.audit.list()[-1].action == "merge"


@pytest.mark.parametrize("forgotten", ["Grace", "visitor"])
def test_forget_erases_the_faces_a_merge_kept_aside(opener, forgotten):
    from identity.erasure import forget

    rng = np.random.default_rng(16)
    store = opener()
    before = _merged_visitor_with_history(store, rng)
    merge_visitor(store, before["visitor"], "Grace")
    report = forget(store, "Grace" if forgotten == "Grace" else before["visitor"])
    assert report.visitor_faces == 2 and report.merges == 1
    assert store.visitors.merge_undo(before["visitor"]) is None and store.visitors.all_faces() == []
    with pytest.raises(GalleryError, match="not merged into anyone"):
        unmerge_visitor(store, before["visitor"], "cli:tester")


# ------------------------------------------------------------------------------------------------ media
def test_crops_round_trip_and_expire(opener):
    store = opener()
    crop = np.zeros((60, 50, 3), np.uint8)
    crop[:, :25] = 200
    key = store.media.put_crop("cam-1", 42, crop, when=1000.0)
    data = store.media.get_crop(key)
    import simplejpeg

    decoded = simplejpeg.decode_jpeg(data, colorspace="RGB")
    assert decoded.shape == crop.shape and np.abs(decoded.astype(int) - crop).mean() < 3
    assert store.media.expire(older_than=999.0) == 0
    assert store.media.expire(older_than=1001.0) == 1
    with pytest.raises(KeyError):
        store.media.get_crop(key)
    with pytest.raises(ValueError, match="camera id"):
        store.media.put_crop("../etc", 1, crop)


# ------------------------------------------------------------------------------------------------ events
def test_events_query_by_time_camera_and_identity_newest_first(opener):
    store = opener()
    ids = store.events.append([EventRecord(event("track_started", "a", 1, 10.0)),
                               EventRecord(event("track_identified", "a", 1, 11.0, "Ann")),
                               EventRecord(event("track_started", "b", 2, 12.0)),
                               EventRecord(event("track_ended", "a", 1, 13.0, "Ann"), crop="a/1", worker="w1")])
    assert ids == sorted(ids) and len(set(ids)) == 4
    everything = store.events.query(EventQuery())
    assert [e.event.capture_ts for e in everything] == [13.0, 12.0, 11.0, 10.0]
    assert (everything[0].crop, everything[0].worker) == ("a/1", "w1")
    assert [e.event.track for e in store.events.query(EventQuery(camera="b"))] == [2]
    assert [e.event.type for e in store.events.query(EventQuery(identity="Ann"))] == ["track_ended",
                                                                                    "track_identified"]
    assert [e.event.capture_ts for e in store.events.query(EventQuery(since=11.0, until=13.0))] == [12.0, 11.0]
    assert [e.id for e in store.events.query(EventQuery(after_id=ids[1]))] == ids[:1:-1]
    assert [e.id for e in store.events.query(EventQuery(after_id=ids[0], limit=2, oldest_first=True))] == ids[1:3]
    assert [e.id for e in store.events.query(EventQuery(identity="Ann", oldest_first=True))] == [ids[1], ids[3]]
    assert len(store.events.query(EventQuery(limit=2))) == 2
    assert store.events.query(EventQuery())[0].event == everything[0].event  # round trip of every field
    assert store.events.expire(older_than=12.0) == 2
    assert [e.event.capture_ts for e in store.events.query(EventQuery())] == [13.0, 12.0]


def test_unname_track_takes_the_name_off_one_track_only(opener):
    store = opener()
    store.events.append([EventRecord(event("track_identified", "cam", 1, 10.0, "Ann")),
                         EventRecord(event("track_ended", "cam", 1, 11.0, "Ann")),
                         EventRecord(event("track_identified", "cam", 2, 12.0, "Ann")),
                         EventRecord(event("track_identified", "other", 1, 13.0, "Ann"))])
    assert store.events.unname_track("cam", 1, "Ann") == 2
    assert store.events.unname_track("cam", 1, "Ann") == 0
    assert [(e.event.camera, e.event.track) for e in store.events.query(EventQuery(identity="Ann"))] == [
        ("other", 1), ("cam", 2)]
    unnamed = [e.event for e in store.events.query(EventQuery(camera="cam")) if e.event.track == 1]
    assert [(e.type, e.name, e.similarity, e.visitor) for e in unnamed] == [("track_ended", None, None, False)]


def test_a_visitor_event_keeps_its_visitor_flag(opener):
    store = opener()
    store.events.append([EventRecord(event("track_identified", "cam", 1, 5.0, "visitor-1", visitor=True))])
    assert store.events.query(EventQuery())[0].event.visitor  # read back as a visitor, not renamed to a person


# ------------------------------------------------------------------------------------------------ live tracks
def test_live_tracks_expire_by_themselves(opener):
    store = opener()
    now = time.time()
    store.live.put(LiveTrack("a", 1, "Ann", False, 0.95, (1, 2, 3, 4), now, now), ttl_s=0.3)
    store.live.put(LiveTrack("b", 2, None, False, None, None, now, now), ttl_s=60)
    assert [(t.camera, t.track) for t in store.live.alive()] == [("a", 1), ("b", 2)]
    assert [t.name for t in store.live.alive(camera="a")] == ["Ann"]
    assert store.live.alive(camera="a")[0].box == (1.0, 2.0, 3.0, 4.0)
    time.sleep(0.4)
    assert [(t.camera, t.track) for t in store.live.alive()] == [("b", 2)]  # nobody removed it
    assert store.live.expire() == 1
    store.live.remove("b", 2)
    assert store.live.alive() == []


def _status(camera: str, fps: float = 10.0) -> CameraStatus:
    return CameraStatus(camera, "worker-1", fps, 100, 2, 1, 1280, 720, time.time())


def test_camera_status_and_preview_expire_and_previews_can_be_cleared(opener):
    store = opener()
    store.live.put_camera(_status("a"), b"\xff\xd8jpeg-a", ttl_s=0.3)
    store.live.put_camera(_status("b", 5.0), None, ttl_s=60)
    assert [(c.camera, c.fps) for c in store.live.cameras()] == [("a", 10.0), ("b", 5.0)]
    assert store.live.preview("a") == b"\xff\xd8jpeg-a"
    with pytest.raises(KeyError):
        store.live.preview("b")  # a status without a preview
    store.live.put_camera(_status("b", 6.0), b"jpeg-b", ttl_s=60)  # a refresh replaces status and preview
    assert store.live.preview("b") == b"jpeg-b" and store.live.cameras()[1].fps == 6.0
    time.sleep(0.4)
    assert [c.camera for c in store.live.cameras()] == ["b"]  # nobody removed it
    with pytest.raises(KeyError):
        store.live.preview("a")
    assert store.live.expire_cameras() == 1
    assert store.live.clear_previews() == 1
    with pytest.raises(KeyError):
        store.live.preview("b")
    assert [c.camera for c in store.live.cameras()] == ["b"]  # the status stays; the next refresh brings a preview


# ------------------------------------------------------------------------------------------------ retention
def test_retention_job_expires_each_kind(opener):
    rng = np.random.default_rng(8)
    store = opener()
    store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5)
    store.media.put_crop("cam", 1, np.zeros((8, 8, 3), np.uint8), when=time.time() - 7200)
    store.media.put_crop("cam", 2, np.zeros((8, 8, 3), np.uint8))
    store.events.append([EventRecord(event("track_started", "cam", 1, time.time() - 3 * 86400)),
                         EventRecord(event("track_started", "cam", 2, time.time()))])
    store.live.put(LiveTrack("cam", 9, None, False, None, None, 0.0, 0.0), ttl_s=0.01)
    time.sleep(0.05)
    job = RetentionJob(store, RetentionConfig(crops_h=1.0, events_days=1.0), VisitorConfig(retention_h=1.0))
    store.live.put_camera(_status("cam"), b"jpeg", ttl_s=0.01)
    time.sleep(0.05)
    assert job.run_once().total() == 4  # the old crop, the old event, the dead live track and the stale preview
    # (the visitor stays)
    report = job.run_once(now=time.time() + 2 * 3600)
    assert (report.visitors, report.crops, report.events) == (1, 1, 0)


# ------------------------------------------------------------------------------------------------ forget
def _seed_identity(store: Store, rng: np.random.Generator, name: str) -> dict:
    """``name`` enrolled, with a merged visitor, a rejection naming it, events with a crop and a live track; and
    Bob, who must survive."""
    store.persons.add_person(name, [face(v, shade=40) for v in unit(rng, 2)])
    store.persons.add_person("Bob", [face(unit(rng)[0])])
    store.negatives.add(name, [face(v, "camera:cam/track:8") for v in unit(rng, 2)])
    store.negatives.add("Bob", [face(unit(rng)[0], "camera:cam/track:9")])
    merged = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    other = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    store.visitors.reject(other, name)
    store.events.append([EventRecord(event("track_identified", "cam", 1, 100.0, merged, visitor=True))])
    merge_visitor(store, merged, name)
    own = store.media.put_crop("cam", 1, np.full((20, 20, 3), 7, np.uint8))
    bobs = store.media.put_crop("cam", 2, np.full((20, 20, 3), 9, np.uint8))
    store.events.append([EventRecord(event("track_identified", "cam", 1, 101.0, name)),
                         EventRecord(event("track_ended", "cam", 1, 102.0, name), crop=own),
                         EventRecord(event("track_ended", "cam", 2, 103.0, "Bob"), crop=bobs)])
    store.live.put(LiveTrack("cam", 1, name, False, 0.9, None, 100.0, 101.0), ttl_s=60)
    store.live.put(LiveTrack("cam", 2, "Bob", False, 0.9, None, 100.0, 101.0), ttl_s=60)
    store.live.put_camera(CameraStatus("cam", "w", 10.0, 5, 0, 2, 640, 480, 101.0), b"preview naming " +
                          name.encode(), ttl_s=60)
    return {"merged": merged, "other": other, "own": own, "bobs": bobs}


def test_forget_erases_faces_events_live_tracks_and_crops_of_one_person(opener, backend):
    from identity.erasure import forget

    rng = np.random.default_rng(9)
    store = opener()
    seeded = _seed_identity(store, rng, "Alice")
    report = forget(store, "Alice")
    assert (report.faces, report.events, report.crops, report.live_tracks, report.previews) == (2, 3, 1, 1, 1)
    with pytest.raises(KeyError):
        store.live.preview("cam")
    assert [p.name for p in store.persons.persons()] == ["Bob"]
    assert store.events.query(EventQuery(identity="Alice")) == []
    assert [e.event.name for e in store.events.query(EventQuery())] == ["Bob"]
    assert [t.name for t in store.live.alive()] == ["Bob"]
    with pytest.raises(KeyError):
        store.media.get_crop(seeded["own"])
    assert store.media.get_crop(seeded["bobs"])
    assert (report.rejections, report.merges, report.left) == (1, 1, ())
    assert store.visitors.rejections() == {} and store.visitors.merged_into(seeded["merged"]) is None
    assert report.negatives == 2 and report.to_json()["negatives"] == 2
    assert store.negatives.counts() == {"Bob": 1} and store.negatives.faces_of("Alice") == []
    with pytest.raises(GalleryError, match="holds nothing of 'Alice'"):
        forget(store, "Alice")


def test_forget_a_visitor_and_an_unknown_name_changes_nothing(opener):
    from identity.erasure import forget

    rng = np.random.default_rng(10)
    store = opener()
    visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    store.visitors.reject(visitor, "Zed")
    store.events.append([EventRecord(event("track_identified", "cam", 4, 10.0, visitor, visitor=True))])
    with pytest.raises(GalleryError, match="holds nothing of 'visitor-99'"):
        forget(store, "visitor-99")
    assert len(store.visitors.list()) == 1 and len(store.events.query(EventQuery())) == 1
    report = forget(store, visitor)
    assert (report.visitor_faces, report.rejections, report.events) == (1, 1, 1)
    assert store.visitors.list() == [] and store.events.query(EventQuery()) == []


# ------------------------------------------------------------------------------------------------ disk budget
def test_crops_over_the_budget_go_oldest_first(opener):
    store = opener()
    rng = np.random.default_rng(11)
    now = time.time()
    keys = [store.media.put_crop("cam", i, rng.integers(0, 255, (40, 40, 3), np.uint8), when=now - 50 + i)
            for i in range(5)]
    sizes = [len(store.media.get_crop(k)) for k in keys]
    assert store.media.total_bytes() == sum(sizes)
    assert store.media.trim_to(sum(sizes)) == 0
    assert store.media.trim_to(sum(sizes[2:])) == 2  # the two oldest
    assert store.media.total_bytes() == sum(sizes[2:])
    for key in keys[:2]:
        with pytest.raises(KeyError):
            store.media.get_crop(key)
    job = RetentionJob(store, RetentionConfig(media_budget_bytes=sizes[4]), VisitorConfig())
    assert job.run_once().crops_budget == 2
    assert store.media.total_bytes() == sizes[4] and store.media.get_crop(keys[4])


def test_visitors_are_searched_like_persons_each_once_best_first(opener):
    rng = np.random.default_rng(30)
    store = opener()
    a, b = unit(rng, 2)
    first = store.visitors.match_or_create([face(a), face(near(rng, a))], 0.99, 5).visitor
    second = store.visitors.match_or_create([face(b)], 0.99, 5).visitor
    (hits,) = store.visitors.search(a[None], 5)
    assert [h.name for h in hits] == [first, second] and hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert store.persons.search(a[None], 5) == [[]]  # visitors are not persons
    merge_visitor(store, first, "Ann")
    assert [h.name for h in store.visitors.search(a[None], 5)[0]] == [second]  # a merged visitor answers no more
