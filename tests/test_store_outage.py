"""The store when its Redis server goes away: a CLI command fails fast with a clear message (exit 2); a server with
its AOF on loses nothing committed when it is killed; a worker's store (`store.buffered.BufferedStore`) keeps
recognising from its replica, buffers its writes (bounded, counted) and writes them in order when the server is
back; the real tracked processor goes on through an outage. Real redis-servers, stopped and restarted."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from argusnet.commands.demo import DEMO_NAME, enrol_demo_person
from argusnet.launcher import free_port
from camera_node.demo import render
from gpu_worker.processing import DecodedFrame
from gpu_worker.tracked import TrackedProcessor
from redis_server import RedisServer, start_redis
from shared import metrics as m
from shared.errors import EXIT_BAD_INPUT, StoreUnavailableError
from store import open_store
from store.buffered import BufferedStore
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig, StoreBufferConfig
from test_store_contract import DIM, MODEL, EventQuery, EventRecord, LiveTrack, event, face, unit

TIMEOUT_S = 1.0
AOF = ("--appendonly", "yes", "--appendfsync", "always")


def open_(cfg, create: bool = True):
    return open_store(cfg, GalleryConfig(), MODEL, DIM, create=create)


def restart(server: RedisServer, directory: Path) -> RedisServer:
    """The same server again: same data directory (its AOF), same port."""
    return start_redis(directory, *AOF, port=server.port)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def live(track: int) -> LiveTrack:
    return LiveTrack("cam", track, None, False, None, None, 1.0, 1.0)


# ------------------------------------------------------------------------------------------------ the CLI
def test_a_cli_command_against_a_dead_redis_fails_fast_naming_the_url(cli, tmp_path):
    started = time.monotonic()
    baseline = cli("gallery", "list", "--gallery", tmp_path / "nothing")  # the same start-up, no Redis
    startup = time.monotonic() - started
    assert baseline.code == EXIT_BAD_INPUT
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for port in (free_port(), silent.getsockname()[1]):  # nobody listening; a server that never answers
            url = f"redis://127.0.0.1:{port}/0"
            env = {"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": url,
                   "ARGUSNET__STORE__SOCKET_TIMEOUT_S": str(TIMEOUT_S)}
            started = time.monotonic()
            result = cli("gallery", "list", env=env)
            took = time.monotonic() - started
            assert result.code == EXIT_BAD_INPUT, result
            assert f"argusnet: error: redis store {url} prefix argusnet: opening the store failed" in result.err
            assert "is the Redis server running and reachable" in result.err
            assert "Traceback" not in result.err and result.out == ""
            assert took < startup + TIMEOUT_S + 1.5, (took, startup)


# ------------------------------------------------------------------------------------------------ AOF
def test_a_killed_server_with_its_aof_on_loses_nothing_committed(tmp_path):
    rng = np.random.default_rng(11)
    server = start_redis(tmp_path, *AOF)
    cfg = RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S)
    alice, bob, stranger = unit(rng, 3)
    try:
        with open_(cfg) as store:
            store.persons.add_person("alice", [face(alice), face(unit(rng)[0])])
            store.persons.add_person("bob", [face(bob)])
            visitor = store.visitors.match_or_create([face(stranger)], 0.9, 5).visitor
            seen_at = time.time() + 100.0
            store.visitors.seen(visitor, [face(unit(rng)[0])], 5)
            store.visitors.seen(visitor, [], 5, when=seen_at)
            ids = store.events.append([EventRecord(event("track_started", "cam", t, float(t)), worker="w1")
                                       for t in range(5)])
            store.events.append([EventRecord(event("track_identified", "cam", 4, 4.5, visitor, visitor=True))])
            crop = store.media.put_crop("cam", 4, np.full((20, 16, 3), 7, np.uint8))
        server.kill()
        server = restart(server, tmp_path)
        with open_(cfg, create=False) as store:
            assert [(p.name, p.faces) for p in store.persons.persons()] == [("alice", 2), ("bob", 1)]
            assert store.persons.search(np.stack([alice, bob]), 1)[0][0].name == "alice"
            assert store.persons.search(bob[None], 1)[0][0].name == "bob"
            [info] = store.visitors.list()
            assert (info.visitor, info.faces, info.last_seen) == (visitor, 2, seen_at)
            assert store.visitors.match_or_create([face(stranger)], 0.9, 5).visitor == visitor
            logged = store.events.query(EventQuery(limit=100))
            assert [e.id for e in logged[1:]] == ids[::-1] and logged[0].event.name == visitor
            assert [e.event.track for e in logged[1:]] == [4, 3, 2, 1, 0] and logged[1].worker == "w1"
            assert store.media.get_crop(crop)[:3] == b"\xff\xd8\xff"
            assert store.events.append([EventRecord(event("track_ended", "cam", 4, 6.0))]) == [ids[-1] + 2]
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ a worker's store
def test_a_worker_store_keeps_searching_buffers_drops_the_oldest_and_flushes_in_order(tmp_path):
    rng = np.random.default_rng(12)
    server = start_redis(tmp_path, *AOF)
    cfg = RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S)
    alice = unit(rng)[0]
    registry = CollectorRegistry()
    store = BufferedStore(open_(cfg), registry, StoreBufferConfig(events=5, live_tracks=3))
    try:
        store.persons.add_person("alice", [face(alice)])
        before = store.events.append([EventRecord(event("track_started", "cam", 100, 1.0))])
        assert len(before) == 1 and store.pending() == {k: 0 for k in m.STORE_BUFFER_KINDS}
        server.stop()
        assert store.persons.search(alice[None], 1)[0][0].name == "alice"  # the replica answers
        with pytest.raises(StoreUnavailableError, match=rf"redis store {cfg.url} .*syncing the gallery failed"):
            store.persons.sync()
        with pytest.raises(StoreUnavailableError, match="is unavailable"):  # no retry due yet: refused at once
            store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5)
        for track in range(8):
            assert store.events.append([EventRecord(event("track_started", "cam", track, 10.0 + track))]) == []
        for track in range(4):
            store.live.put(live(track), 60.0)
        key = store.media.put_crop("cam", 7, np.full((20, 16, 3), 9, np.uint8))
        assert store.persons.search(alice[None], 1)[0][0].name == "alice"
        assert store.pending() == {"events": 5, "live_tracks": 3, "crops": 1, "visitors": 0}
        assert sample(registry, m.STORE_DROPPED, kind="events") == 3
        assert sample(registry, m.STORE_DROPPED, kind="live_tracks") == 1
        assert sample(registry, m.STORE_BUFFER_DEPTH, kind="events") == 5
        assert sample(registry, m.STORE_ERRORS, operation="sync_persons") == 1
        assert sample(registry, m.STORE_ERRORS, operation="match_or_create") == 1
        assert sample(registry, m.STORE_REPLICA_LAG) > 0
        server = restart(server, tmp_path)
        deadline = time.monotonic() + 15.0
        while sum(store.pending().values()) and time.monotonic() < deadline:
            store.flush()
            time.sleep(0.1)
        assert store.pending() == {k: 0 for k in m.STORE_BUFFER_KINDS}
        assert sample(registry, m.STORE_BUFFER_DEPTH, kind="events") == 0
        assert store.persons.sync() is False and store.visitors.sync() is False
        assert sample(registry, m.STORE_REPLICA_LAG) < 1.0  # both replicas synced just now
        with open_(cfg, create=False) as other:  # what any other process reads from the store now
            logged = other.events.query(EventQuery(limit=100))
            assert [e.event.track for e in logged] == [7, 6, 5, 4, 3, 100]  # the oldest three were dropped
            assert [e.id for e in logged] == sorted((e.id for e in logged), reverse=True)
            assert sorted(t.track for t in other.live.alive(camera="cam")) == [1, 2, 3]
            assert other.media.get_crop(key)[:3] == b"\xff\xd8\xff"
            assert [p.name for p in other.persons.persons()] == ["alice"]
        assert sample(registry, m.STORE_DROPPED, kind="events") == 3  # nothing more lost
    finally:
        store.close()
        server.stop()


def test_writes_still_waiting_when_the_worker_stops_are_counted_as_dropped(tmp_path):
    server = start_redis(tmp_path)
    registry = CollectorRegistry()
    store = BufferedStore(open_(RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S)), registry)
    server.stop()
    store.events.append([EventRecord(event("track_started", "cam", 1, 1.0))])
    store.live.remove("cam", 1)
    store.close()
    assert sample(registry, m.STORE_DROPPED, kind="events") == 1
    assert sample(registry, m.STORE_DROPPED, kind="live_tracks") == 1


def test_store_metrics_exist_from_the_start_and_a_local_store_writes_at_once(tmp_path):
    registry = CollectorRegistry()
    with BufferedStore(open_(LocalStoreConfig(path=tmp_path / "store")), registry) as store:
        for operation in m.STORE_OPERATIONS:
            assert sample(registry, m.STORE_LATENCY + "_count", operation=operation) == 0
            assert sample(registry, m.STORE_ERRORS, operation=operation) == 0
        for kind in m.STORE_BUFFER_KINDS:
            assert sample(registry, m.STORE_BUFFER_DEPTH, kind=kind) == 0
            assert sample(registry, m.STORE_DROPPED, kind=kind) == 0
        assert 0 <= sample(registry, m.STORE_REPLICA_LAG) < 5.0
        ids = store.events.append([EventRecord(event("track_started", "cam", 1, 1.0))])
        store.live.put(live(1), 60.0)
        key = store.media.put_crop("cam", 1, np.full((20, 16, 3), 9, np.uint8))
        assert [e.id for e in store.events.query(EventQuery())] == ids
        assert [t.track for t in store.live.alive()] == [1] and store.media.get_crop(key)[:3] == b"\xff\xd8\xff"
        assert sample(registry, m.STORE_LATENCY + "_count", operation="append_events") == 1
        assert store.pending() == {k: 0 for k in m.STORE_BUFFER_KINDS}


def test_a_workers_store_times_negative_evidence(tmp_path):
    registry = CollectorRegistry()
    with BufferedStore(open_(LocalStoreConfig(path=tmp_path / "store")), registry) as store:
        vector = unit(np.random.default_rng(3))
        [face_id] = store.negatives.add("Ann", [face(vector[0])])
        assert store.negatives.search(vector, 1)[0][0].face_id == face_id
        assert store.negatives.counts() == {"Ann": 1} and store.negatives.model == MODEL
        assert sample(registry, m.STORE_LATENCY + "_count", operation="write_negatives") == 1
        assert sample(registry, m.STORE_LATENCY + "_count", operation="search_negatives") == 1
        assert sample(registry, m.STORE_LATENCY + "_count", operation="read_negatives") == 1
        assert not store.negatives.sync()
        assert sample(registry, m.STORE_LATENCY + "_count", operation="sync_negatives") == 1
        assert store.negatives.erase("Ann") == 1 and store.negatives.faces_of("Ann") == []


# ------------------------------------------------------------------------------------------------ the worker
def wait_available(store: BufferedStore, timeout: float = 15.0) -> None:
    """Until a retry of the store succeeded (the delay between retries may have grown to MAX_RETRY_S)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            store.persons.sync()
            return
        except StoreUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class NullTimer:
    def observe(self, stage: str, seconds: float) -> None:
        pass


def feed(processor: TrackedProcessor, start: float, stop: float) -> list:
    events = []
    for t in np.arange(start, stop, 0.1):
        image, _ = render(float(t))
        events += processor.process([DecodedFrame("cam", int(t * 10), 1000.0 + float(t), image, 0.0)], NullTimer())
    return events


def test_the_tracked_processor_recognises_through_a_redis_outage(engine, tmp_path):
    server = start_redis(tmp_path, *AOF)
    cfg = RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S)
    registry = CollectorRegistry()
    store = BufferedStore(enrol_demo_person(engine, cfg), registry)
    try:
        processor = TrackedProcessor(engine, store, engine.cfg, worker="w1")
        server.stop()
        processor._next_sync = 0.0  # a sync is due at once: it fails, counted
        events = feed(processor, 2.0, 5.0)
        named = [e for e in events if e.type == "track_identified" and e.name == DEMO_NAME]
        assert named, events  # recognised from the replica while Redis is down
        assert processor.recorder.errors["sync"] >= 1
        assert store.pending()["events"] >= 2 and store.pending()["live_tracks"] >= 1
        server = restart(server, tmp_path)
        deadline = time.monotonic() + 15.0
        while sum(store.pending().values()) and time.monotonic() < deadline:
            processor.idle()  # the worker's housekeeping flushes
            time.sleep(0.1)
        assert store.pending() == {k: 0 for k in m.STORE_BUFFER_KINDS}
        logged = store.events.query(EventQuery(camera="cam", limit=1000))[::-1]
        assert [(e.event.type, e.event.track, e.event.name) for e in logged] == [
            (e.type, e.track, e.name) for e in events]
        assert sample(registry, m.STORE_DROPPED, kind="events") == 0
    finally:
        store.close()
        server.stop()


def test_a_stranger_gets_no_visitor_while_redis_is_down_and_one_when_it_is_back(engine, tmp_path):
    server = start_redis(tmp_path, *AOF)
    cfg = RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S)
    store = BufferedStore(open_store(cfg, engine.cfg.gallery, engine.embedder.name, engine.embedder.dim,
                                     create=True))  # nobody enrolled: her track is a stranger
    try:
        processor = TrackedProcessor(engine, store, engine.cfg)
        server.stop()
        during = feed(processor, 0.5, 4.0)
        assert not [e for e in during if e.type == "track_identified"], during  # no visitor id minted locally
        assert processor.recorder.errors["match_or_create"] >= 1
        server = restart(server, tmp_path)
        wait_available(store)
        after = feed(processor, 4.0, 7.0)
        visitors = [e for e in after if e.type == "track_identified" and e.visitor]
        assert len(visitors) == 1 and visitors[0].track == during[0].track, after
        assert [v.visitor for v in store.visitors.list()] == [visitors[0].name]
    finally:
        store.close()
        server.stop()
