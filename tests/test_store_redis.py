"""What only the Redis backend has: a dead or silent server, keys that are not ours, a password, repairs of a
half-written gallery on open, and a replica that fell behind a trimmed change stream. The contract every backend
keeps is in test_store_contract.py."""

from __future__ import annotations

import logging
import socket
import time

import numpy as np
import pytest
import redis

from argusnet.launcher import free_port
from redis_server import start_redis
from shared.errors import ConfigError, GalleryError, StoreError
from store import open_store
from store.config import GalleryConfig, RedisStoreConfig
from store.redis.keys import StoreKeys
from test_store_contract import DIM, MODEL, EventQuery, EventRecord, event, face, near, unit

TIMEOUT_S = 0.5


@pytest.fixture
def cfg(redis_url, request) -> RedisStoreConfig:
    return RedisStoreConfig(url=redis_url, prefix=f"x{abs(hash(request.node.nodeid)):x}", socket_timeout_s=TIMEOUT_S)


@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def open_(cfg: RedisStoreConfig, create: bool = True, model: str | None = MODEL):
    return open_store(cfg, GalleryConfig(), model, DIM, create=create)


# ------------------------------------------------------------------------------------------------ a dead server
def test_nobody_listening_is_a_store_error_at_once():
    cfg = RedisStoreConfig(url=f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"redis store redis://127\.0\.0\.1:\d+/0 prefix argusnet: opening the "
                                         r"store failed \(ConnectionError"):
        open_(cfg)
    assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_a_server_that_never_answers_fails_after_the_socket_timeout():
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cfg = RedisStoreConfig(url=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", socket_timeout_s=TIMEOUT_S)
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"opening the store failed \(TimeoutError"):
            open_(cfg)
        assert time.monotonic() - started < TIMEOUT_S + 1.0


def test_a_server_that_dies_under_an_open_store_is_a_store_error(tmp_path):
    server = start_redis(tmp_path)
    try:
        store = open_(RedisStoreConfig(url=server.url, socket_timeout_s=TIMEOUT_S))
    finally:
        server.stop()
    rng = np.random.default_rng(1)
    with pytest.raises(StoreError, match="adding a person failed"):
        store.persons.add_person("alice", [face(unit(rng)[0])])
    with pytest.raises(StoreError, match="matching or creating a visitor failed"):
        store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5)
    with pytest.raises(StoreError, match="appending events failed"):
        store.events.append([EventRecord(event("track_started", "cam", 1, 1.0))])
    with pytest.raises(StoreError, match="syncing the gallery failed"):
        store.persons.sync()
    store.close()


# ------------------------------------------------------------------------------------------------ not our keys
def test_foreign_keys_under_the_prefix_are_refused(cfg, raw):
    raw.set(f"{cfg.prefix}:session:42", "someone else's")
    with pytest.raises(GalleryError, match=rf"keys under prefix '{cfg.prefix}' are not an ArgusNet store .*"
                                           rf"'{cfg.prefix}:session:42'.*choose another store.prefix"):
        open_(cfg)
    assert raw.get(f"{cfg.prefix}:session:42") == b"someone else's"  # and nothing was written


def test_a_meta_key_of_another_application_is_refused(cfg, raw):
    raw.set(StoreKeys(cfg.prefix).meta, "x")
    with pytest.raises(GalleryError, match="meta is a string"):
        open_(cfg)


def test_another_schema_version_is_refused(cfg, raw):
    open_(cfg).close()
    raw.hset(StoreKeys(cfg.prefix).meta, "schema_version", "99")
    with pytest.raises(GalleryError, match="store schema version 99 is not supported"):
        open_(cfg, create=False)


def test_a_missing_store_names_the_url_without_the_password(redis_url):
    url = redis_url.replace("redis://", "redis://:hunter2@")
    with pytest.raises(GalleryError, match="no gallery at redis://127.0.0.1") as err:
        open_(RedisStoreConfig(url=url, prefix="nothing_here"), create=False)
    assert "hunter2" not in str(err.value)


# ------------------------------------------------------------------------------------------------ password
def test_the_password_is_read_from_password_file(tmp_path):
    server = start_redis(tmp_path, "--requirepass", "s3cret")
    try:
        (tmp_path / "pw").write_text("s3cret\n")
        with open_(RedisStoreConfig(url=server.url, password_file=tmp_path / "pw")) as store:
            assert store.persons.face_count == 0
        (tmp_path / "wrong").write_text("nope\n")
        with pytest.raises(StoreError, match="opening the store failed"):
            open_(RedisStoreConfig(url=server.url, password_file=tmp_path / "wrong"))
        with pytest.raises(ConfigError, match="store.password_file: cannot read"):
            open_(RedisStoreConfig(url=server.url, password_file=tmp_path / "missing"))
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ repairs
def test_a_half_written_face_is_removed_on_open_with_a_log_line(cfg, raw, caplog):
    rng = np.random.default_rng(2)
    vector = unit(rng)[0]
    with open_(cfg) as store:
        [kept] = store.persons.add_person("alice", [face(vector)])
    gkeys = StoreKeys(cfg.prefix).gallery("persons")
    raw.hset(gkeys.face(999), mapping={"person": "alice", "embedding": unit(rng)[0].tobytes()})  # no index entry
    raw.sadd(gkeys.faces_of("alice"), 998)  # an index entry without its face
    with caplog.at_level(logging.WARNING, logger="store.redis.gallery"):
        store = open_(cfg, create=False)
    try:
        assert "face 999 was written without its index entry" in caplog.text
        assert "listed face 998, which is not stored" in caplog.text
        assert not raw.exists(gkeys.face(999)) and raw.smembers(gkeys.faces_of("alice")) == {str(kept).encode()}
        assert store.persons.face_count == 1 and [f.face_id for f in store.persons.faces_of("alice")] == [kept]
        assert store.persons.search(vector[None], 5)[0][0].name == "alice"
    finally:
        store.close()


def test_a_replica_behind_a_trimmed_change_stream_rebuilds(cfg, raw, caplog):
    rng = np.random.default_rng(3)
    reader, writer = open_(cfg), open_(cfg)
    try:
        vectors = unit(rng, 3)
        for i, vector in enumerate(vectors):
            writer.persons.add_person(f"p{i}", [face(vector)])
        writer.persons.remove_person("p0")
        raw.xtrim(StoreKeys(cfg.prefix).gallery("persons").changes, maxlen=1, approximate=False)
        with caplog.at_level(logging.INFO, logger="store.redis.gallery"):
            assert reader.persons.sync()
        assert "rebuilding" in caplog.text
        assert reader.persons.face_count == 2
        assert reader.persons.search(vectors[2:3], 1)[0][0].name == "p2"
        assert not reader.persons.sync()
    finally:
        reader.close()
        writer.close()


def test_a_reembed_by_another_process_reaches_the_replica(cfg):
    rng = np.random.default_rng(4)
    reader, writer = open_(cfg), open_(cfg)
    try:
        [face_id] = writer.persons.add_person("alice", [face(unit(rng)[0])])
        new = unit(rng)[0]
        writer.persons.replace_embeddings("model_2", DIM, {face_id: new})
        assert reader.persons.sync() and reader.persons.model == "model_2"
        assert reader.persons.search(new[None], 1)[0][0].similarity == pytest.approx(1.0, abs=1e-5)
    finally:
        reader.close()
        writer.close()


# ------------------------------------------------------------------------------------------------ events
def test_events_of_a_merged_visitor_appended_later_name_the_person(cfg):
    rng = np.random.default_rng(5)
    with open_(cfg) as store:
        visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
        store.events.append([EventRecord(event("track_identified", "cam", 1, 10.0, visitor, visitor=True))])
        assert store.events.rename_identity(visitor, "Hana") == 1
        store.events.append([EventRecord(event("track_ended", "cam", 1, 11.0, visitor, visitor=True))])
        assert [(e.event.name, e.event.visitor) for e in store.events.query(EventQuery(identity="Hana"))] == [
            ("Hana", False), ("Hana", False)]
        assert store.events.query(EventQuery(identity=visitor)) == []
        ids = [e.id for e in store.events.query(EventQuery())]
        assert ids == sorted(ids, reverse=True) and ids[-1] >= 1


def test_an_append_retried_after_a_timeout_is_logged_once(cfg):
    """A worker whose append timed out (a hung server that ran it once it resumed) retries the same records: the
    retry gets the first append's ids and logs nothing twice; a different record is a new event."""
    with open_(cfg) as store:
        records = [EventRecord(event("track_started", "cam", 1, 10.0)),
                   EventRecord(event("track_ended", "cam", 1, 12.0))]
        first = store.events.append(records)
        assert store.events.append(records) == first  # the retry
        assert store.events.append(records[1:]) == first[1:]
        later = store.events.append([EventRecord(event("track_started", "cam", 2, 13.0))])
        assert later[0] > first[-1]
        assert [(e.event.track, e.event.type) for e in store.events.query(EventQuery(oldest_first=True))] == [
            (1, "track_started"), (1, "track_ended"), (2, "track_started")]


def test_many_events_page_through_the_stream(cfg):
    with open_(cfg) as store:
        ids = store.events.append([EventRecord(event("track_started", f"c{i % 3}", i, float(i))) for i in range(1200)])
        assert ids == list(range(ids[0], ids[0] + 1200))
        got = store.events.query(EventQuery(camera="c1", since=100.0, until=1000.0, limit=10_000))
        assert [e.event.track for e in got] == [i for i in range(999, 99, -1) if i % 3 == 1]
        assert len(store.events.query(EventQuery(after_id=ids[-11], limit=10_000))) == 10
        assert store.events.expire(older_than=600.0) == 600
        assert len(store.events.query(EventQuery(limit=10_000))) == 600


def test_visitor_matching_sees_a_visitor_another_process_just_made(cfg):
    rng = np.random.default_rng(6)
    first, second = open_(cfg), open_(cfg)
    try:
        base = unit(rng)[0]
        made = first.visitors.match_or_create([face(base)], 0.9, 5)
        again = second.visitors.match_or_create([face(near(rng, base))], 0.9, 5)  # no sync() in between
        assert made.created and (again.visitor, again.created) == (made.visitor, False)
    finally:
        first.close()
        second.close()
