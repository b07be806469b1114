"""Encryption at rest on the Redis backend (store.encryption_key_file): no embedding, crop or preview bytes in any
key (SCAN + DUMP of the whole prefix), round trips through a second process's replica, clear refusals of a wrong,
missing or unwanted key, and `argusnet store rekey` (including a rekey that stopped part-way)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import redis

from shared.errors import GalleryError
from store import open_store
from store.config import GalleryConfig, RedisStoreConfig
from store.crypto import Cipher, load_key
from store.redis.keys import REKEY_FIELD, StoreKeys
from store.redis.rekey import rekey_redis
from store.types import CameraStatus
from tests.test_encryption import DIM, JPEG_MAGIC, face, key_file, negative_vectors, unit


def cfg_of(url: str, tmp_path: Path, key: Path | None) -> RedisStoreConfig:
    prefix = "e" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    return RedisStoreConfig(url=url, prefix=prefix, encryption_key_file=key)


def opened(cfg: RedisStoreConfig, create: bool = False):
    return open_store(cfg, GalleryConfig(), model="dlib", dim=DIM, create=create)


def filled(cfg: RedisStoreConfig) -> tuple[np.ndarray, dict[str, bytes]]:
    vectors = unit(np.random.default_rng(0), 3)
    with opened(cfg, create=True) as store:
        store.persons.add_person("alice", [face(v) for v in vectors])
        store.visitors.match_or_create([face(unit(np.random.default_rng(5), 1)[0])], 0.9, 5)
        store.negatives.add("alice", [face(v) for v in negative_vectors()])
        key = store.media.put_crop("cam1", 7, face(vectors[0]).crop)
        status = CameraStatus(camera="cam1", worker="w1", fps=10.0, frames=10, dropped=0, tracks=0, width=1280,
                              height=720, updated_ts=1.0)
        store.live.put_camera(status, JPEG_MAGIC + b"preview" * 9, 60)
        plain = store.media.get_crop(key)
    needles = {f"embedding {i}": v.tobytes() for i, v in enumerate(vectors)}
    needles.update({f"negative embedding {i}": v.tobytes() for i, v in enumerate(negative_vectors())})
    needles.update({"embedding head": vectors[0][:8].tobytes(), "track crop": plain, "jpeg": JPEG_MAGIC})
    return vectors, needles


def dumps(url: str, prefix: str) -> dict[bytes, bytes]:
    client = redis.Redis.from_url(url)
    client.config_set("rdbcompression", "no")  # DUMP holds the raw bytes (LZF would hide them)
    try:
        return {k: k + (client.dump(k) or b"") for k in client.scan_iter(match=f"{prefix}:*")}
    finally:
        client.config_set("rdbcompression", "yes")
        client.close()


def test_nothing_plain_in_redis_and_round_trip(redis_url, tmp_path):
    key = key_file(tmp_path)
    cfg = cfg_of(redis_url, tmp_path, key)
    vectors, needles = filled(cfg)
    found = {(label, k) for k, blob in dumps(redis_url, cfg.prefix).items() for label, n in needles.items()
             if n in blob}
    assert not found
    with opened(cfg) as store:  # a fresh replica: every embedding decrypted from Redis
        assert store.persons.search(vectors[:1], 1)[0][0].name == "alice"
        got = store.persons.faces_of("alice")
        np.testing.assert_array_equal(np.stack([f.embedding for f in got]), vectors)
        assert got[0].crop.shape == (48, 40, 3)
        assert store.media.get_crop("cam1/7").startswith(JPEG_MAGIC)
        assert store.live.preview("cam1").startswith(JPEG_MAGIC)
        assert len(store.visitors.gallery.all_faces()) == 1
        kept = store.negatives.faces_of("alice")
        np.testing.assert_array_equal(np.stack([f.embedding for f in kept]), negative_vectors())


def test_plain_redis_store_keeps_plain_bytes(redis_url, tmp_path):
    cfg = cfg_of(redis_url, tmp_path, None)
    vectors, _ = filled(cfg)
    assert any(vectors[0].tobytes() in blob for blob in dumps(redis_url, cfg.prefix).values())


def test_wrong_missing_and_unwanted_keys_are_refused_at_open(redis_url, tmp_path):
    key = key_file(tmp_path)
    cfg = cfg_of(redis_url, tmp_path, key)
    filled(cfg)
    with pytest.raises(GalleryError, match="another key"):
        opened(cfg.model_copy(update={"encryption_key_file": key_file(tmp_path, "other")}))
    with pytest.raises(GalleryError, match="is encrypted: set store.encryption_key_file"):
        opened(cfg.model_copy(update={"encryption_key_file": None}))
    plain = cfg_of(redis_url, tmp_path / "plain", None)
    filled(plain)
    with pytest.raises(GalleryError, match="is not encrypted"):
        opened(plain.model_copy(update={"encryption_key_file": key}))


def test_a_blob_moved_onto_another_face_fails_to_decrypt(redis_url, tmp_path):
    cfg = cfg_of(redis_url, tmp_path, key_file(tmp_path))
    filled(cfg)
    gallery = StoreKeys(cfg.prefix).gallery("persons")
    with redis.Redis.from_url(redis_url) as r:
        r.hset(gallery.face(2), "crop", r.hget(gallery.face(1), "crop"))
    with opened(cfg) as store:
        with pytest.raises(GalleryError, match="face 2 crop"):
            store.persons.faces_of("alice")


def run_cli(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "argusnet.cli", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120)


def site(tmp_path: Path, cfg: RedisStoreConfig, key: Path | None) -> Path:
    path = tmp_path / "site.yaml"
    line = "" if key is None else f"\n  encryption_key_file: {key}"
    path.write_text(f"store:\n  type: redis\n  url: {cfg.url}\n  prefix: {cfg.prefix}{line}\n")
    return path


def test_rekey_a_plain_store_then_to_another_key(redis_url, tmp_path):
    first, second = key_file(tmp_path, "first"), key_file(tmp_path, "second")
    cfg = cfg_of(redis_url, tmp_path, None)
    vectors, needles = filled(cfg)
    with opened(cfg) as store:
        store.live.clear_previews()  # a worker that stopped more than ttl_s ago
        store.live.expire_cameras(now=float("inf"))
    done = run_cli("store", "rekey", "--new-key-file", str(first), config=site(tmp_path, cfg, None))
    assert done.returncode == 0, done.stderr
    assert not any(n in blob for blob in dumps(redis_url, cfg.prefix).values() for n in needles.values())
    done = run_cli("store", "rekey", "--new-key-file", str(second), config=site(tmp_path, cfg, first))
    assert done.returncode == 0, done.stderr
    with pytest.raises(GalleryError, match="another key"):
        opened(cfg.model_copy(update={"encryption_key_file": first}))
    with opened(cfg.model_copy(update={"encryption_key_file": second})) as store:
        assert store.persons.search(vectors[1:2], 1)[0][0].name == "alice"
        assert store.media.get_crop("cam1/7").startswith(JPEG_MAGIC)
        assert [r.action for r in store.audit.list()][-2:] == ["rekey", "rekey"]
    third = key_file(tmp_path, "third")  # the configured current key is stale: the store is on the second now
    wrong = run_cli("store", "rekey", "--new-key-file", str(third), config=site(tmp_path, cfg, first))
    assert wrong.returncode == 2 and "another key" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_rekey_refuses_running_workers_and_resumes_after_a_stop(redis_url, tmp_path):
    old_file, new_file = key_file(tmp_path, "old"), key_file(tmp_path, "new")
    cfg = cfg_of(redis_url, tmp_path, old_file)
    vectors, _ = filled(cfg)  # a camera status fresh for 60 s: a worker is running
    old, new = Cipher(load_key(old_file), "old"), Cipher(load_key(new_file), "new")
    with pytest.raises(GalleryError, match=r"workers are serving cameras \(cam1\)"):
        rekey_redis(cfg, old, new)
    with opened(cfg) as store:  # nothing changed: the old key still opens it
        store.live.expire_cameras(now=float("inf"))
    meta = StoreKeys(cfg.prefix).meta
    with redis.Redis.from_url(redis_url) as r:  # a rekey that stopped right after it began
        r.hset(meta, REKEY_FIELD, new.check_value)
    for key in (old_file, new_file):
        with pytest.raises(GalleryError, match="a rekey stopped part-way"):
            opened(cfg.model_copy(update={"encryption_key_file": key}))
    with pytest.raises(GalleryError, match="another key stopped part-way"):
        rekey_redis(cfg, old, Cipher(load_key(key_file(tmp_path, "third")), "third"))
    done = rekey_redis(cfg, old, new)
    assert done["persons"] == 3 and done["visitors"] == 1 and done["negatives"] == 2 and done["crops"] == 1
    assert rekey_redis(cfg, new, new)["persons"] == 0  # everything already opens with the key: nothing rewritten
    with opened(cfg.model_copy(update={"encryption_key_file": new_file})) as store:
        assert store.persons.search(vectors[2:3], 1)[0][0].name == "alice"
        assert store.negatives.search(negative_vectors()[:1], 1)[0][0].name == "alice"


def test_faces_a_merge_kept_are_sealed_rekeyed_and_unmerged(redis_url, tmp_path):
    from identity.merges import merge_visitor, unmerge_visitor

    old, new = key_file(tmp_path, "old"), key_file(tmp_path, "new")
    cfg = cfg_of(redis_url, tmp_path, old)
    filled(cfg)
    vector = unit(np.random.default_rng(5), 1)[0]
    with opened(cfg) as store:
        merge_visitor(store, "visitor-1", "alice")
        store.live.clear_previews()
        store.live.expire_cameras(now=float("inf"))
    kept = {k: v for k, v in dumps(redis_url, cfg.prefix).items() if b":merged_face:" in k}
    assert len(kept) == 1 and not any(vector[:8].tobytes() in blob for blob in kept.values())
    done = rekey_redis(cfg, Cipher(load_key(old), "old"), Cipher(load_key(new), "new"))
    assert done["visitors"] == 1  # the kept face (its embedding and crop)
    with opened(cfg.model_copy(update={"encryption_key_file": new})) as store:
        assert unmerge_visitor(store, "visitor-1", "test").faces_restored == 1
        (restored,) = store.visitors.faces_of("visitor-1")
        np.testing.assert_array_equal(restored.embedding, vector)
        assert store.visitors.match_or_create([face(vector)], 0.9, 5).visitor == "visitor-1"
