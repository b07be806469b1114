"""Visitors: the store behind the tracked processor and the `argusnet visitors` commands an operator uses."""

from __future__ import annotations

import json
import time

import numpy as np

from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RetentionConfig, VisitorConfig
from store.retention import RetentionJob
from store.types import FaceSample

DIM = 128


def sample(rng: np.random.Generator, base: np.ndarray | None = None) -> FaceSample:
    v = rng.standard_normal(DIM).astype(np.float32) if base is None else base + 0.02 * rng.standard_normal(DIM)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    return FaceSample(v, np.full((64, 64, 3), 128, np.uint8), np.arange(10, dtype=np.float32).reshape(5, 2), "cam:a")


def make_store(tmp_path, model: str = "dlib_resnet_v1"):
    return open_store(LocalStoreConfig(path=tmp_path / "gallery"), GalleryConfig(), model, DIM, create=True)


def test_store_matches_visitors_keeps_best_faces_and_expires(tmp_path):
    rng = np.random.default_rng(3)
    store = make_store(tmp_path)
    first = sample(rng)
    created = store.visitors.match_or_create([first, sample(rng, first.embedding), sample(rng, first.embedding)],
                                             threshold=0.9, max_faces=2)
    assert created.visitor == "visitor-1" and created.created and store.visitors.list()[0].faces == 2  # max_faces
    match = store.visitors.match_or_create([sample(rng, first.embedding)], threshold=0.9, max_faces=2)
    assert match.visitor == "visitor-1" and not match.created and match.similarity > 0.9
    other = store.visitors.match_or_create([sample(rng)], threshold=0.9, max_faces=2)
    assert other.visitor == "visitor-2" and other.created
    key = store.media.put_crop("a", 7, first.crop)
    assert key == "a/7" and store.media.get_crop(key)[:3] == b"\xff\xd8\xff"
    time.sleep(0.05)
    job = RetentionJob(store, RetentionConfig(crops_h=1e-6), VisitorConfig(retention_h=1e-6))  # 3.6 ms
    report = job.run_once()
    assert report.visitors == 2 and report.crops == 1
    assert store.visitors.list() == [] and not (tmp_path / "gallery" / "crops" / "a" / "7.jpg").exists()
    store.close()


def test_visitors_cli_list_reject_name(tmp_path, cli):
    rng = np.random.default_rng(4)
    store = make_store(tmp_path)
    store.visitors.match_or_create([sample(rng)], threshold=0.9, max_faces=5)
    store.close()
    gallery = tmp_path / "gallery"
    r = cli("visitors", "list", "--gallery", gallery, "--json")
    assert r.code == 0 and [v["visitor"] for v in json.loads(r.out)["visitors"]] == ["visitor-1"]
    assert cli("visitors", "reject", "visitor-1", "Ann", "--gallery", gallery).code == 0
    assert json.loads(cli("visitors", "list", "--gallery", gallery, "--json").out)["visitors"][0]["not"] == ["Ann"]
    r = cli("visitors", "name", "visitor-1", "Bob", "--gallery", gallery)
    assert r.code == 0 and "1 face(s)" in r.out
    persons = json.loads(cli("gallery", "list", "--gallery", gallery, "--json").out)["persons"]
    assert [p["name"] for p in persons] == ["Bob"]
    assert json.loads(cli("visitors", "list", "--gallery", gallery, "--json").out)["visitors"] == []
    r = cli("visitors", "name", "visitor-9", "Eve", "--gallery", gallery)
    assert r.code == 2 and "no person named 'visitor-9'" in r.err
    audit = json.loads(cli("audit", "list", "--gallery", gallery, "--json").out)["records"]
    assert [(a["action"], a["subject"]) for a in audit] == [("reject", "Ann"), ("name_visitor", "Bob")]
    assert cli("audit", "verify", "--gallery", gallery).code == 0


def test_rejected_name_is_never_given_to_that_visitors_track(tmp_path, engine):
    from argusnet.config import load_config
    from gpu_worker.track_state import TrackRecord
    from gpu_worker.tracked import TrackedProcessor
    from identity.decision import decide
    from identity.voting import VotingConfig
    from identity.voting import TrackIdentity
    from store.types import PersonHit

    store = make_store(tmp_path)
    store.visitors.match_or_create([sample(np.random.default_rng(5))], threshold=0.9, max_faces=5)
    store.visitors.reject("visitor-1", "Ann")
    processor = TrackedProcessor(engine, store, load_config(environ={}))
    record = TrackRecord(1, 0.0, TrackIdentity(VotingConfig(), 0.92), (0, 0, 1, 1), 0.0, visitor="visitor-1")
    hits = [PersonHit("Ann", 0.97, 1), PersonHit("Bob", 0.80, 2)]
    assert decide(hits, engine.rule).name == "Ann"
    assert decide(processor._usable(record, hits, []), engine.rule).name is None  # Ann refused; Bob too low
    store.close()


def test_visitors_cli_unmerge_undoes_a_naming(tmp_path, cli):
    from shared.protocol import TrackEvent
    from store.types import EventQuery, EventRecord

    rng = np.random.default_rng(6)
    store = make_store(tmp_path)
    store.visitors.match_or_create([sample(rng), sample(rng)], threshold=0.99, max_faces=5)
    store.events.append([EventRecord(TrackEvent(type="track_identified", camera="a", track=3, name="visitor-1",
                                                similarity=0.9, margin=None, ts=10.0, capture_ts=10.0, box=None,
                                                time_to_name_ms=None, duration_s=None, visitor=True))])
    before = store.events.query(EventQuery())
    store.close()
    gallery = tmp_path / "gallery"
    assert cli("visitors", "name", "visitor-1", "Bob", "--gallery", gallery).code == 0
    r = cli("visitors", "unmerge", "visitor-1", "--gallery", gallery, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {"visitor": "visitor-1", "person": "Bob", "faces_restored": 2,
                                 "person_faces_removed": 2, "events": 1, "live_tracks": 0}
    assert json.loads(cli("gallery", "list", "--gallery", gallery, "--json").out)["persons"] == []
    listed = json.loads(cli("visitors", "list", "--gallery", gallery, "--json").out)["visitors"]
    assert [(v["visitor"], v["faces"]) for v in listed] == [("visitor-1", 2)]
    r = cli("visitors", "unmerge", "visitor-1", "--gallery", gallery)
    assert r.code == 2 and "visitor-1 is not merged into anyone" in r.err and "Traceback" not in r.err
    r = cli("visitors", "unmerge", "visitor-7", "--gallery", gallery)
    assert r.code == 2 and "visitor-7 is not merged" in r.err
    audit = json.loads(cli("audit", "list", "--gallery", gallery, "--json").out)["records"]
    assert [(a["action"], a["subject"]) for a in audit] == [("name_visitor", "Bob"), ("unmerge", "Bob")]
    assert cli("audit", "verify", "--gallery", gallery).code == 0
    store = make_store(tmp_path)
    assert store.events.query(EventQuery()) == before
    store.close()
