"""`argusnet forget`: after it, no byte of the person survives anywhere in the store.

Local: the demo astronaut is enrolled, `argusnet track` runs on the demo walk (her face crosses the frame and
leaves, so her track ends with a crop), `argusnet forget` erases her, and then every file of the store directory
(SQLite databases with their WAL and shm, index files, crops, audit files) is searched for her name, her
embedding's float32 bytes and the crop's JPEG bytes, all read before the forget. Redis: the same through the store
API, searching SCAN + DUMP of every key of the store (with rdbcompression off, so DUMP holds raw bytes)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

from argusnet.commands.demo import DEMO_NAME, astronaut, enrol_demo_person
from camera_node.demo import render
from identity.erasure import forget
from identity.merges import merge_visitor
from shared.protocol import TrackEvent
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig
from store.types import EventQuery, EventRecord, FaceSample, LiveTrack

VIDEO_FPS = 10.0
WALK_S = 12.0  # one period of the demo walk: the face enters, crosses and leaves


def demo_walk(path: Path) -> Path:
    frames = [render(t)[0] for t in np.arange(0.0, WALK_S, 1.0 / VIDEO_FPS)]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), VIDEO_FPS, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def store_bytes(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def holders(blobs: dict, needles: dict[str, bytes]) -> dict[str, list[str]]:
    """needle label -> the files (keys) whose bytes hold it."""
    return {label: [str(k) for k, data in blobs.items() if needle in data] for label, needle in needles.items()
            if any(needle in data for data in blobs.values())}


def test_forget_leaves_no_byte_of_the_person_in_a_local_store(engine, cli, tmp_path):
    directory = tmp_path / "store"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    video = demo_walk(tmp_path / "walk.mp4")
    tracked = cli("track", video, "--gallery", directory, "--events-jsonl", tmp_path / "events.jsonl")
    assert tracked.code == 0, tracked.err
    assert json.loads(tracked.out)["identified"].get(DEMO_NAME), tracked.out
    with open_store(LocalStoreConfig(path=directory), engine.cfg.gallery) as store:
        embeddings = [f.embedding.astype(np.float32).tobytes() for f in store.persons.faces_of(DEMO_NAME)]
        named = store.events.query(EventQuery(identity=DEMO_NAME))
        crops = [store.media.get_crop(e.crop) for e in named if e.crop]
        stranger = -np.asarray(store.persons.faces_of(DEMO_NAME)[0].embedding, np.float32)  # "not her" evidence
        store.negatives.add(DEMO_NAME, [FaceSample(stranger, np.full((40, 40, 3), 90, np.uint8),
                                                   np.zeros((5, 2), np.float32), "camera:cam/track:99")])
    assert named and crops, "her track ended with a crop"
    needles = {"name": DEMO_NAME.encode("utf-8"), **{f"embedding {i}": e for i, e in enumerate(embeddings)},
               **{f"crop {i}": c for i, c in enumerate(crops)}, "negative embedding": stranger.tobytes()}
    assert set(holders(store_bytes(directory), needles)) == set(needles)  # every needle is there before

    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(astronaut(), cv2.COLOR_RGB2BGR))
    forgot = cli("forget", DEMO_NAME, "--gallery", directory, "--json", tmp_path / "forget.json")
    assert forgot.code == 0, forgot.out + forgot.err
    report = json.loads((tmp_path / "forget.json").read_text())
    assert report["faces"] == 1 and report["events"] == len(named) and report["crops"] == len(crops)
    assert report["negatives"] == 1 and report["left"] == []

    assert holders(store_bytes(directory), needles) == {}
    again = cli("identify", tmp_path / "photo.png", "--gallery", directory, "--json")
    assert again.code == 0, again.err
    assert [f["name"] for f in json.loads(again.out)["faces"]] == ["unknown"]
    assert cli("audit", "verify", "--gallery", directory).code == 0
    unknown = cli("forget", DEMO_NAME, "--gallery", directory)
    assert unknown.code == 2 and "holds nothing of" in unknown.err


def test_forget_of_an_unknown_name_exits_2_and_changes_nothing(engine, cli, tmp_path):
    directory = tmp_path / "store"
    enrol_demo_person(engine, LocalStoreConfig(path=directory)).close()
    before = {p: hashlib.sha256(b).hexdigest() for p, b in store_bytes(directory).items() if p.suffix != ".json"
              and not p.name.endswith(("-wal", "-shm"))}
    result = cli("forget", "Nobody", "--gallery", directory)
    assert result.code == 2 and "holds nothing of 'Nobody'" in result.err
    after = {p: hashlib.sha256(b).hexdigest() for p, b in store_bytes(directory).items() if p in before}
    assert after == before


# ------------------------------------------------------------------------------------------------ redis
DIM = 32
NAME = "Ada Lovelace-Forgotten"


def _seeded_redis_store(url: str, prefix: str):
    rng = np.random.default_rng(12)
    store = open_store(RedisStoreConfig(url=url, prefix=prefix), GalleryConfig(), "m", DIM, create=True)
    vectors = rng.standard_normal((2, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    crop = rng.integers(0, 255, (40, 40, 3), np.uint8)
    store.persons.add_person(NAME, [FaceSample(v, crop, np.zeros((5, 2), np.float32), "p.jpg") for v in vectors])
    key = store.media.put_crop("cam", 3, rng.integers(0, 255, (40, 40, 3), np.uint8))
    ev = TrackEvent(type="track_ended", camera="cam", track=3, name=NAME, similarity=0.9, margin=None, ts=5.0,
                    capture_ts=5.0, box=(1.0, 2.0, 3.0, 4.0), time_to_name_ms=None, duration_s=1.0, visitor=False)
    store.events.append([EventRecord(ev, crop=key)] + [EventRecord(
        TrackEvent(type="track_started", camera="cam", track=i, name=None, similarity=None, margin=None, ts=float(i),
                   capture_ts=float(i), box=None, time_to_name_ms=None, duration_s=0.0, visitor=False))
        for i in range(10, 30)])
    store.live.put(LiveTrack("cam", 3, NAME, False, 0.9, None, 1.0, 2.0, crop=key), ttl_s=60)
    visitor = store.visitors.match_or_create([FaceSample(-vectors[0], crop, np.zeros((5, 2), np.float32), "c")],
                                             0.9, 5).visitor
    merge_visitor(store, visitor, NAME)
    stranger = -vectors[1]  # negative evidence: a face that is not NAME, kept under NAME
    store.negatives.add(NAME, [FaceSample(stranger, crop, np.zeros((5, 2), np.float32), "camera:cam/track:4")])
    needles = {"name": NAME.encode("utf-8"), "crop": store.media.get_crop(key), "negative": stranger.tobytes(),
               **{f"embedding {i}": v.tobytes() for i, v in enumerate(vectors)}}
    return store, needles


def _dumps(url: str, prefix: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    client.config_set("rdbcompression", "no")  # DUMP holds the raw bytes (LZF would hide them)
    try:
        return {k: k + (client.dump(k) or b"") for k in client.scan_iter(match=f"{prefix}:*")}
    finally:
        client.config_set("rdbcompression", "yes")
        client.close()


@pytest.fixture
def seeded(redis_url, tmp_path):
    prefix = "f" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    store, needles = _seeded_redis_store(redis_url, prefix)
    yield store, needles, prefix
    store.close()


def test_forget_leaves_no_embedding_or_crop_in_any_redis_key(seeded, redis_url):
    store, needles, prefix = seeded
    assert set(holders(_dumps(redis_url, prefix), needles)) == set(needles)
    report = forget(store, NAME)
    assert (report.faces, report.events, report.crops, report.live_tracks, report.negatives) == (2, 1, 1, 1, 1)
    assert store.events.query(EventQuery(identity=NAME)) == [] and len(store.events.query(EventQuery())) == 20
    assert (report.rejections, report.merges, report.left) == (0, 1, ())
    assert holders(_dumps(redis_url, prefix), needles) == {}


def test_forget_leaves_not_even_the_name_in_any_redis_key(seeded, redis_url):
    store, needles, prefix = seeded
    forget(store, NAME)
    assert holders(_dumps(redis_url, prefix), needles) == {}


def test_a_scrubbed_change_stream_keeps_replica_cursors_valid(redis_url, tmp_path, caplog):
    """Replicas behind the forget (one that has the person's faces, one opened before the enrolment) catch up from
    the rewritten stream without a rebuild and end without the person's faces; the generation did not move."""
    prefix = "g" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    cfg = RedisStoreConfig(url=redis_url, prefix=prefix)
    before = open_store(cfg, GalleryConfig(), "m", DIM, create=True)
    store, _ = _seeded_redis_store(redis_url, prefix)
    store.persons.add_person("Bob", [FaceSample(np.eye(DIM, dtype=np.float32)[0], np.zeros((8, 8, 3), np.uint8),
                                                np.zeros((5, 2), np.float32), "b.jpg")])
    holding = open_store(cfg, GalleryConfig(), "m", DIM)
    raw = redis.Redis.from_url(redis_url)
    try:
        ids = [entry_id for entry_id, _ in raw.xrange(f"{prefix}:persons:changes")]
        gen = raw.get(f"{prefix}:persons:generation")
        assert holding.persons.face_count == 3
        forget(store, NAME)
        assert [entry_id for entry_id, _ in raw.xrange(f"{prefix}:persons:changes")][:len(ids)] == ids
        assert int(raw.get(f"{prefix}:persons:generation")) == int(gen) + 1  # the remove; the scrub bumps nothing
        assert not raw.exists(f"{prefix}:persons:changes:rewrite")
        caplog.clear()
        caplog.set_level(logging.INFO, logger="store.redis.gallery")
        for replica in (before, holding):
            assert replica.persons.sync()
            assert [hit[0].name for hit in replica.persons.search(np.eye(DIM, dtype=np.float32)[:1], 1)] == ["Bob"]
            assert replica.persons.face_count == 1
        assert "rebuilding" not in caplog.text
    finally:
        raw.close()
        holding.close()
        before.close()
        store.close()
