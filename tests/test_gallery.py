"""The gallery: persistence, add/remove without rebuild, exact vs HNSW, model guard, crash recovery."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from shared.errors import GalleryError, GalleryExistsError, NameRuleError
from store.config import GalleryConfig
from store.face_index import FaceIndex
from store.local.gallery import DB_FILE, INDEX_FILE, INDEX_META_FILE, Gallery
from store.types import FaceSample

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def faces(n: int) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    crops = [np.full((32, 32, 3), 40 * i % 255, np.uint8) for i in range(n)]
    return crops, np.tile(np.arange(10, dtype=np.float32).reshape(5, 2), (n, 1, 1)), [f"p{i}.jpg" for i in range(n)]


def samples(vectors: np.ndarray, crops, landmarks, sources) -> list[FaceSample]:
    return [FaceSample(v, c, lm, s) for v, c, lm, s in zip(vectors, crops, landmarks, sources)]


def enrol(gallery: Gallery, name: str, vectors: np.ndarray) -> list[int]:
    return gallery.add_person(name, samples(vectors, *faces(len(vectors))))


def visit(gallery: Gallery, vectors: np.ndarray) -> str:
    """A new visitor with these faces, as a worker mints one (a visitor id is no person's name: add_person refuses
    it); its name."""
    match = gallery.match_or_create(samples(vectors, *faces(len(vectors))), 1.01, "visitor", len(vectors))
    assert match.created
    return match.visitor


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_search_ranks_each_person_once_by_best_face(tmp_path, rng):
    cfg = GalleryConfig()
    alice, bob = unit(rng, 3), unit(rng, 2)
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        enrol(g, "alice", alice)
        enrol(g, "bob", bob)
        hits = g.search(alice[1:2], k=5)[0]
    assert [h.name for h in hits] == ["alice", "bob"]
    assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
    assert hits[1].similarity == pytest.approx(float(np.max(bob @ alice[1])), abs=1e-5)


def test_persisted_and_reloaded_without_rebuild(tmp_path, rng, caplog):
    cfg = GalleryConfig()
    vectors = unit(rng, 4)
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        ids = enrol(g, "alice", vectors)
    assert (tmp_path / "g" / INDEX_FILE).is_file()
    caplog.set_level("INFO")
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.face_count == 4 and g.model == "m" and g.dim == DIM
        assert g.search(vectors[2:3], 1)[0][0].face_id == ids[2]
        stored = list(g.all_faces())
    assert "rebuilding" not in caplog.text
    assert [s.face_id for s in stored] == ids and stored[0].crop.shape == (32, 32, 3)


def test_remove_person(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        enrol(g, "alice", unit(rng, 2))
        bob = unit(rng, 1)
        enrol(g, "bob", bob)
        assert g.remove_person("alice") == 2
        assert [h.name for h in g.search(bob, 5)[0]] == ["bob"]
        with pytest.raises(GalleryError, match="no person named 'carol'"):
            g.remove_person("carol")
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert [p.name for p in g.persons()] == ["bob"] and g.face_count == 1


def test_refuses_other_model_and_bad_shapes(tmp_path, rng):
    with Gallery.create(tmp_path / "g", "dlib", DIM, GalleryConfig()) as g:
        crops, landmarks, sources = faces(1)
        with pytest.raises(GalleryError, match="holds dlib embeddings, refusing arcface"):
            g.add_person("x", samples(unit(rng, 1), crops, landmarks, sources), model="arcface")
        with pytest.raises(ValueError, match=r"expected shape \(N, 16\), got \(1, 8\)"):
            g.add_person("x", samples(unit(rng, 1, 8), crops, landmarks, sources))
        assert g.face_count == 0 and g.persons() == []


def test_open_refuses_missing_and_foreign_directories(tmp_path):
    with pytest.raises(GalleryError, match="does not exist"):
        Gallery.open(tmp_path / "nope", GalleryConfig())
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.txt").write_text("x")
    with pytest.raises(GalleryError, match="not an ArgusNet gallery"):
        Gallery.open(tmp_path / "photos", GalleryConfig())
    with pytest.raises(GalleryError, match="not an empty directory"):
        Gallery.create(tmp_path / "photos", "m", DIM, GalleryConfig())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_FILE).write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(GalleryError, match="not a readable gallery database"):
        Gallery.open(tmp_path / "bad", GalleryConfig())


def test_stale_or_corrupt_index_is_rebuilt_from_sqlite(tmp_path, rng):
    cfg = GalleryConfig()
    vectors = unit(rng, 3)
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        alice_ids = enrol(g, "alice", vectors[:2])
    old_index = (tmp_path / "g" / INDEX_FILE).read_bytes()
    old_meta = (tmp_path / "g" / INDEX_META_FILE).read_bytes()
    with Gallery.open(tmp_path / "g", cfg) as g:
        new_id = enrol(g, "bob", vectors[2:])[0]
    # Simulate a crash after the SQLite commit but before the index file was written.
    (tmp_path / "g" / INDEX_FILE).write_bytes(old_index)
    (tmp_path / "g" / INDEX_META_FILE).write_bytes(old_meta)
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.search(vectors[2:], 1)[0][0].face_id == new_id
    assert json.loads((tmp_path / "g" / INDEX_META_FILE).read_text())["faces"] == 3
    (tmp_path / "g" / INDEX_FILE).write_bytes(b"garbage")
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.search(vectors[2:], 1)[0][0].face_id == new_id
    # Two writers interleaved: the json is current but the index beside it holds other vectors for the same ids.
    other = FaceIndex(DIM, cfg)
    other.add(np.asarray(alice_ids + [new_id], np.int64), unit(rng, 3))
    (tmp_path / "g" / INDEX_FILE).write_bytes(other.serialize())
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.search(vectors[2:], 1)[0][0].face_id == new_id
        assert g.search(vectors[2:], 1)[0][0].similarity == pytest.approx(1.0, abs=1e-5)


def test_failed_add_writes_nothing(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        enrol(g, "alice", unit(rng, 1))
        crops, landmarks, sources = faces(2)
        crops[1] = np.zeros((0, 0, 3), np.uint8)  # JPEG encoding of the second crop fails mid-transaction
        with pytest.raises(Exception):
            g.add_person("bob", samples(unit(rng, 2), crops, landmarks, sources))
        assert [p.name for p in g.persons()] == ["alice"] and g.face_count == 1
        assert len(g.search(unit(rng, 1), 5)[0]) == 1
    db = sqlite3.connect(tmp_path / "g" / DB_FILE)
    assert db.execute("SELECT COUNT(*) FROM faces").fetchone()[0] == 1


def test_another_process_enrolment_is_picked_up_by_refresh(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as reader:
        assert not reader.sync()
        with Gallery.open(tmp_path / "g", cfg) as writer:
            bob = unit(rng, 1)
            enrol(writer, "bob", bob)
        assert reader.sync()
        assert reader.search(bob, 1)[0][0].name == "bob"


def test_reembed_switches_model(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "old", DIM, cfg) as g:
        ids = enrol(g, "alice", unit(rng, 2))
        new = unit(rng, 2, 8)
        with pytest.raises(GalleryError, match="must cover every face"):
            g.replace_embeddings("new", 8, {ids[0]: new[0]})
        g.replace_embeddings("new", 8, dict(zip(ids, new)))
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert (g.model, g.dim) == ("new", 8)
        assert g.search(new[1:], 1)[0][0].face_id == ids[1]


def test_a_process_refuses_a_gallery_another_process_reembedded(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "old", DIM, cfg) as worker:
        ids = enrol(worker, "alice", unit(rng, 2))
        with Gallery.open(tmp_path / "g", cfg) as operator:  # `argusnet gallery reembed` in another process
            operator.replace_embeddings("new", DIM, dict(zip(ids, unit(rng, 2))))
        with pytest.raises(GalleryError, match="re-embedded with new by another process; this process embeds "
                                               "with old"):
            worker.sync()


def test_two_processes_expiring_the_same_person_both_succeed(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as first, Gallery.open(tmp_path / "g", cfg) as second:
        assert visit(first, unit(rng, 1)) == "visitor-1"
        second.sync()
        listed = [p.name for p in second.persons()]
        assert first.expire(time.time() + 1) == ["visitor-1"]
        assert second.remove_person(listed[0], missing_ok=True) == 0  # what second.expire does for a name gone
        assert second.expire(time.time() + 1) == [] and second.face_count == 0
        with pytest.raises(GalleryError, match="no person named 'visitor-1'"):
            second.remove_person("visitor-1")


def test_switches_to_hnsw_above_threshold_and_keeps_results(tmp_path, rng):
    cfg = GalleryConfig(hnsw_above=50)
    vectors = unit(rng, 120)
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        enrol(g, "first", vectors[:40])
        assert g.index_kind == "exact"
        for i in range(40, 120, 20):
            enrol(g, f"p{i}", vectors[i:i + 20])
        assert g.index_kind == "hnsw"
        assert g.search(vectors[100:101], 3)[0][0].name == "p100"
        g.remove_person("p100")
        assert all(h.name != "p100" for h in g.search(vectors[100:101], 10)[0])
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.index_kind == "hnsw" and g.face_count == 100
        assert all(h.name != "p100" for h in g.search(vectors[100:101], 10)[0])


def test_face_index_hnsw_tombstones_and_compaction(rng):
    cfg = GalleryConfig(hnsw_above=10)
    index = FaceIndex(DIM, cfg)
    vectors = unit(rng, 40)
    index.add(np.arange(40), vectors)
    assert index.is_hnsw and len(index) == 40
    index.remove(np.arange(5))
    found = index.search(vectors[:5], 3)
    assert not np.isin(found.ids, np.arange(5)).any()
    index.remove(np.arange(5, 15))  # past a quarter: compacted
    assert len(index) == 25 and sorted(index.ids().tolist()) == list(range(15, 40))
    assert index.search(vectors[20:21], 1).ids[0, 0] == 20


def test_visitor_support_names_rejections_and_expiry(tmp_path, rng):
    cfg = GalleryConfig()
    with Gallery.create(tmp_path / "g", "m", DIM, cfg) as g:
        assert [g.allocate_name("visitor") for _ in range(2)] == ["visitor-1", "visitor-2"]
        assert visit(g, unit(rng, 1)) == "visitor-3"
        with pytest.raises(NameRuleError, match="visitor id"):
            enrol(g, "visitor-4", unit(rng, 1))
        g.reject("visitor-3", "alice")
        assert g.rejections() == {"visitor-3": frozenset({"alice"})}
        with pytest.raises(GalleryError, match="no person named 'nobody'"):
            g.reject("nobody", "alice")
        old = g.persons()[0].last_seen
        assert g.expire(older_than=old - 1) == []
        assert g.expire(older_than=old + 1) == ["visitor-3"] and g.face_count == 0
        assert g.rejections() == {}
    with Gallery.open(tmp_path / "g", cfg) as g:
        assert g.allocate_name("visitor") == "visitor-4"  # numbers are never handed out twice


def _open_visitors_at(directory: str, start_at: float) -> int:
    """In a fresh process: wait for the common start time, open (or create) the visitor gallery, count its persons."""
    import time as _time

    from store.local.store import VISITORS_DIR, _open_or_create

    _time.sleep(max(0.0, start_at - _time.time()))
    with _open_or_create(Path(directory) / VISITORS_DIR, "dlib", DIM, GalleryConfig()) as g:
        return len(g.persons())


def test_workers_creating_the_same_visitor_gallery_at_once_all_open_it(tmp_path):
    """Two workers sharing a gallery directory create its visitor gallery on start: each must get the one whole
    gallery, never a half-made one (this raced in CI)."""
    start_at = time.time() + 3.0
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_open_visitors_at, [str(tmp_path)] * 6, [start_at] * 6))
    assert results == [0] * 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visitors"]  # no staging directory left behind
    with Gallery.open(tmp_path / "visitors", GalleryConfig()) as g:
        assert g.model == "dlib" and g.face_count == 0


def test_create_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    with pytest.raises(GalleryExistsError, match="exists and is not an empty directory"):
        Gallery.create(tmp_path / "g", "dlib", DIM, GalleryConfig())
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]
