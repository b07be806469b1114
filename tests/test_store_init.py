"""`argusnet store init`: a new site's empty store, made before workers and the dashboard start (they refuse a
missing one), on both backends; idempotent; a store of another embedder refused."""

from __future__ import annotations

import json

from store import open_store
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig


def test_init_creates_an_empty_local_store_once(cli, tmp_path):
    where = tmp_path / "site-store"
    first = cli("store", "init", "--gallery", where)
    assert first.code == 0 and "created, empty" in first.out, first.err
    with open_store(LocalStoreConfig(path=where), GalleryConfig()) as store:  # what a worker does: no create
        assert store.persons.persons() == [] and store.persons.model == "dlib_resnet_v1"
    again = cli("store", "init", "--gallery", where, "--json")
    assert again.code == 0 and json.loads(again.out)["created"] is False


def test_init_creates_a_redis_store(cli, redis_url):
    env = {"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": redis_url, "ARGUSNET__STORE__PREFIX": "init1"}
    done = cli("store", "init", "--json", env=env)
    assert done.code == 0 and json.loads(done.out)["created"] is True, done.err
    with open_store(RedisStoreConfig(url=redis_url, prefix="init1"), GalleryConfig()) as store:
        assert store.persons.face_count == 0


def test_init_refuses_a_store_of_another_embedder(cli, tmp_path):
    where = tmp_path / "other"
    open_store(LocalStoreConfig(path=where), GalleryConfig(), model="arcface_r100", dim=512, create=True).close()
    done = cli("store", "init", "--gallery", where)
    assert done.code == 2 and "arcface_r100" in done.err and "Traceback" not in done.err
