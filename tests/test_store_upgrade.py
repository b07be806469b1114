"""A store directory written by the previous ArgusNet (gallery schema version 1, crop files without an index, no
store.sqlite) is upgraded in place when it is opened: nothing is lost, and old crops fall under retention."""

from __future__ import annotations

import os
import sqlite3
import time

import numpy as np

from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.local.gallery import DB_FILE, SCHEMA_VERSION
from store.local.sqlite import RECORDS_FILE
from store.types import FaceSample

DIM = 16


def test_a_version_1_store_is_upgraded_in_place(tmp_path):
    rng = np.random.default_rng(11)
    v = rng.standard_normal(DIM).astype(np.float32)
    v /= np.linalg.norm(v)
    cfg = LocalStoreConfig(path=tmp_path / "g")
    with open_store(cfg, GalleryConfig(), "m", DIM, create=True) as store:
        store.persons.add_person("ann", [FaceSample(v, np.zeros((8, 8, 3), np.uint8), np.zeros((5, 2)), "a.jpg")])
    for gallery in (tmp_path / "g", tmp_path / "g" / "visitors"):  # what version 1 wrote: no merges table
        db = sqlite3.connect(gallery / DB_FILE)
        db.execute("DROP TABLE merges")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.commit()
        db.close()
    (tmp_path / "g" / RECORDS_FILE).unlink()
    old_crop = tmp_path / "g" / "crops" / "cam" / "7.jpg"
    old_crop.parent.mkdir(parents=True)
    old_crop.write_bytes(b"\xff\xd8\xff" + b"\0" * 10)
    os.utime(old_crop, (time.time() - 7200, time.time() - 7200))

    with open_store(cfg, GalleryConfig(), "m", DIM) as store:
        assert store.persons.search(v[None], 1)[0][0].name == "ann"
        assert store.media.get_crop("cam/7").startswith(b"\xff\xd8\xff")
        assert store.visitors.merged_into("visitor-1") is None  # the merges table exists now
        assert store.media.expire(older_than=time.time() - 3600) == 1  # the old crop was indexed by its mtime
    db = sqlite3.connect(tmp_path / "g" / DB_FILE)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    db.close()
