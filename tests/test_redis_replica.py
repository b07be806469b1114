"""A Redis replica above ``gallery.hnsw_above`` answers from an exact index at once and builds HNSW in the
background; the changes made while it builds reach the HNSW index before the swap (none lost, none resurrected),
and close() does not wait for a running build."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from store import open_store
from store.config import GalleryConfig, RedisStoreConfig
from store.face_index import FaceIndex
from store.redis import gallery as redis_gallery
from test_store_contract import DIM, MODEL, face, near, unit

HNSW_ABOVE = 200
PERSONS, FACES_EACH = 300, 10  # 3,000 faces
SWAP_TIMEOUT_S = 30.0


@pytest.fixture
def cfg(redis_url, request) -> RedisStoreConfig:
    return RedisStoreConfig(url=redis_url, prefix=f"r{abs(hash(request.node.nodeid)):x}", socket_timeout_s=10.0)


@pytest.fixture
def written(cfg) -> np.ndarray:
    """PERSONS persons p0.. of FACES_EACH faces each, written by a store that is closed again; their vectors."""
    vectors = unit(np.random.default_rng(5), PERSONS * FACES_EACH).reshape(PERSONS, FACES_EACH, DIM)
    writer = open_store(cfg, GalleryConfig(), MODEL, DIM, create=True)
    try:
        for i in range(PERSONS):
            writer.persons.add_person(f"p{i}", [face(v) for v in vectors[i]])
    finally:
        writer.close()
    return vectors


@pytest.fixture
def gate(monkeypatch) -> threading.Event:
    """The background build waits for this event before it starts adding."""
    event, original = threading.Event(), FaceIndex.hnsw_built.__func__

    def gated(cls, ids, vectors, cfg, stop, batch=1000):
        if not event.wait(SWAP_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")
        return original(cls, ids, vectors, cfg, stop, batch)

    monkeypatch.setattr(FaceIndex, "hnsw_built", classmethod(gated))
    return event


def wait_for_hnsw(gallery) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while gallery.index_kind != "hnsw":
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {gallery.index_kind} after {SWAP_TIMEOUT_S} s")
        time.sleep(0.01)


def top1(gallery, queries: np.ndarray) -> list[str]:
    return [hits[0].name if hits else "" for hits in gallery.search(queries, 1)]


def test_a_replica_searches_at_once_and_changes_during_the_build_survive_the_swap(cfg, written, gate):
    rng = np.random.default_rng(6)
    queries = np.stack([near(rng, written[i, i % FACES_EACH]) for i in range(PERSONS)])
    replica = open_store(cfg, GalleryConfig(hnsw_above=HNSW_ABOVE), MODEL, DIM)
    other = open_store(cfg, GalleryConfig(), MODEL, DIM)
    try:
        persons = replica.persons
        assert persons.index_kind == "exact"
        exact = top1(persons, queries)
        assert exact == [f"p{i}" for i in range(PERSONS)]
        # while the graph is not built: this process and another one add and remove
        new_mine, new_other = unit(rng, 3), unit(rng, 2)
        persons.add_person("mine", [face(v) for v in new_mine])
        persons.remove_person("p0")
        other.persons.add_person("theirs", [face(v) for v in new_other])
        other.persons.remove_person("p1")
        assert persons.sync()
        assert persons.index_kind == "exact"
        gate.set()
        wait_for_hnsw(persons)
        persons.add_person("after", [face(unit(rng)[0])])
        assert persons.face_count == PERSONS * FACES_EACH - 2 * FACES_EACH + 3 + 2 + 1
        hnsw = top1(persons, queries)
        assert hnsw[2:] == exact[2:]
        assert hnsw[0] not in ("p0", "p1") and hnsw[1] not in ("p0", "p1")  # removed during the build: gone
        assert top1(persons, new_mine) == ["mine"] * 3
        assert top1(persons, new_other) == ["theirs"] * 2
        found = {h.name for hits in persons.search(queries[:2], 50) for h in hits}
        assert not found & {"p0", "p1"}
    finally:
        other.close()
        replica.close()


def test_a_replica_below_the_threshold_stays_exact_without_a_build(cfg, written):
    replica = open_store(cfg, GalleryConfig(hnsw_above=PERSONS * FACES_EACH), MODEL, DIM)
    try:
        assert replica.persons.index_kind == "exact"
        assert replica.persons._build is None
    finally:
        replica.close()


def test_an_unconstrained_build_swaps_in_and_agrees_with_exact(cfg, written):
    rng = np.random.default_rng(7)
    queries = np.stack([near(rng, written[i, 0]) for i in range(PERSONS)])
    exact_store = open_store(cfg, GalleryConfig(hnsw_above=10 ** 9), MODEL, DIM)
    replica = open_store(cfg, GalleryConfig(hnsw_above=HNSW_ABOVE), MODEL, DIM)
    try:
        wait_for_hnsw(replica.persons)
        assert top1(replica.persons, queries) == top1(exact_store.persons, queries)
    finally:
        replica.close()
        exact_store.close()


def test_close_does_not_wait_for_a_running_build(cfg, written, monkeypatch):
    original = FaceIndex.hnsw_built.__func__

    def slow(cls, ids, vectors, cfg, stop, batch=1000):  # 10 faces a batch, 10 ms between batches: ~3 s in all
        return original(cls, ids, vectors, cfg, lambda: time.sleep(0.01) or stop(), 10)

    monkeypatch.setattr(FaceIndex, "hnsw_built", classmethod(slow))
    replica = open_store(cfg, GalleryConfig(hnsw_above=HNSW_ABOVE), MODEL, DIM)
    build = replica.persons._build
    time.sleep(0.2)
    t0 = time.monotonic()
    replica.close()
    assert time.monotonic() - t0 < min(1.0, redis_gallery.CLOSE_JOIN_S)
    build.join(SWAP_TIMEOUT_S)
    assert not build.is_alive()
    assert replica.persons.index_kind == "exact"
