"""Visitors: the store behind the tracked processor and the `argusnet visitors` commands an operator uses."""

from __future__ import annotations

import json
import time

import numpy as np

from gpu_worker.gallery import Gallery
from gpu_worker.identity_store import FaceSample, LocalIdentityStore, open_visitors
from shared.config import GalleryConfig, VisitorConfig

DIM = 128


def sample(rng: np.random.Generator, base: np.ndarray | None = None) -> FaceSample:
    v = rng.standard_normal(DIM).astype(np.float32) if base is None else base + 0.02 * rng.standard_normal(DIM)
    v = (v / np.linalg.norm(v)).astype(np.float32)
    return FaceSample(v, np.full((64, 64, 3), 128, np.uint8), np.arange(10, dtype=np.float32).reshape(5, 2), "cam:a")


def make_store(tmp_path, model: str = "dlib_resnet_v1") -> LocalIdentityStore:
    persons = Gallery.create(tmp_path / "gallery", model, DIM, GalleryConfig())
    visitors = open_visitors(tmp_path / "gallery", model, DIM, GalleryConfig())
    return LocalIdentityStore(persons, visitors, VisitorConfig(max_faces=2))


def test_store_matches_visitors_keeps_best_faces_and_expires(tmp_path):
    rng = np.random.default_rng(3)
    store = make_store(tmp_path)
    first = sample(rng)
    name = store.new_visitor([first, sample(rng, first.embedding), sample(rng, first.embedding)])
    assert name == "visitor-1" and store.visitors.face_count == 2  # max_faces
    match = store.match_visitor(sample(rng, first.embedding).embedding, threshold=0.9)
    assert match is not None and match.visitor == "visitor-1" and match.similarity > 0.9
    assert store.match_visitor(sample(rng).embedding, threshold=0.9) is None
    path = store.save_crop("a", 7, first.crop)
    assert path.name == "7.jpg" and path.parent.name == "a"
    store.cfg = VisitorConfig(retention_h=1e-6)  # 3.6 ms
    time.sleep(0.05)
    store.refresh(now=1e9)
    assert store.visitors.face_count == 0 and not path.exists()


def test_visitors_cli_list_reject_name(tmp_path, cli):
    rng = np.random.default_rng(4)
    store = make_store(tmp_path)
    store.new_visitor([sample(rng)])
    store.persons.close()
    store.visitors.close()
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


def test_rejected_name_is_never_given_to_that_visitors_track(tmp_path, engine):
    from gpu_worker.decision import decide
    from gpu_worker.gallery import PersonHit
    from gpu_worker.track_state import TrackRecord
    from gpu_worker.tracked import TrackedProcessor
    from shared.config import load_config
    from tracker.config import VotingConfig
    from tracker.voting import TrackIdentity

    store = make_store(tmp_path)
    store.new_visitor([sample(np.random.default_rng(5))])
    store.visitors.reject("visitor-1", "Ann")
    store.refresh(now=1e9 + 1)
    processor = TrackedProcessor(engine, store, load_config(environ={}))
    record = TrackRecord(1, 0.0, TrackIdentity(VotingConfig(), 0.92), (0, 0, 1, 1), 0.0, visitor="visitor-1")
    hits = [PersonHit("Ann", 0.97, 1), PersonHit("Bob", 0.80, 2)]
    assert decide(hits, engine.rule).name == "Ann"
    assert processor._decide(record, hits).name is None  # Ann refused; Bob is below the threshold
