"""Encryption at rest of a local store (store.encryption_key_file): nothing plain on disk, round trips, clear
refusals of a wrong, missing or malformed key, and `argusnet store rekey`."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.errors import GalleryError, InputError
from store import open_store
from store.config import GalleryConfig, LocalStoreConfig
from store.crypto import Cipher, load_key
from store.types import FaceSample

DIM = 128
JPEG_MAGIC = b"\xff\xd8\xff"


def key_file(tmp_path: Path, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_text(secrets.token_hex(32) + "\n")
    return path


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def face(vector: np.ndarray) -> FaceSample:
    crop = np.random.default_rng(1).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    return FaceSample(vector, crop, np.arange(10, dtype=np.float32).reshape(5, 2), "photo.jpg")


def negative_vectors() -> np.ndarray:
    """The embeddings of the negative evidence ``filled`` keeps for alice."""
    return unit(np.random.default_rng(7), 2)


def opened(directory: Path, key: Path | None, create: bool = False):
    return open_store(LocalStoreConfig(path=directory, encryption_key_file=key), GalleryConfig(), model="dlib",
                      dim=DIM, create=create)


def filled(tmp_path: Path, key: Path | None) -> tuple[Path, np.ndarray]:
    directory = tmp_path / "store"
    vectors = unit(np.random.default_rng(0), 3)
    with opened(directory, key, create=True) as store:
        store.persons.add_person("alice", [face(v) for v in vectors])
        store.visitors.match_or_create([face(unit(np.random.default_rng(5), 1)[0])], 0.9, 5)
        store.negatives.add("alice", [face(v) for v in negative_vectors()])
        store.media.put_crop("cam1", 7, face(vectors[0]).crop)
    return directory, vectors


def disk_bytes(directory: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in directory.rglob("*") if p.is_file()]


def test_nothing_plain_on_disk_and_round_trip(tmp_path):
    key = key_file(tmp_path)
    directory, vectors = filled(tmp_path, key)
    rows = sqlite3.connect(directory / "gallery.sqlite").execute("SELECT embedding, crop FROM faces").fetchall()
    assert len(rows) == 3
    for embedding, crop in rows:
        assert not any(v.tobytes() in embedding for v in vectors)
        assert JPEG_MAGIC not in crop
    negatives = sqlite3.connect(directory / "negatives" / "gallery.sqlite").execute("SELECT crop FROM faces")
    assert [JPEG_MAGIC in crop for (crop,) in negatives.fetchall()] == [False, False]
    for path, data in disk_bytes(directory):  # sqlite files, WAL, index.faiss, crop files
        for v in [*vectors, *negative_vectors()]:
            assert v.tobytes() not in data, path
            assert v[:8].tobytes() not in data, path
        if path.suffix == ".jpg":
            assert not data.startswith(JPEG_MAGIC)
    with opened(directory, key) as store:
        assert store.persons.search(vectors[:1], 1)[0][0].name == "alice"
        got = store.persons.faces_of("alice")
        np.testing.assert_array_equal(np.stack([f.embedding for f in got]), vectors)
        assert got[0].crop.shape == (48, 40, 3)
        assert store.media.get_crop("cam1/7").startswith(JPEG_MAGIC)
        kept = store.negatives.faces_of("alice")
        np.testing.assert_array_equal(np.stack([f.embedding for f in kept]), negative_vectors())
        assert kept[0].crop.shape == (48, 40, 3)


def test_plain_store_is_unchanged(tmp_path):
    directory, vectors = filled(tmp_path, None)
    rows = sqlite3.connect(directory / "gallery.sqlite").execute("SELECT embedding FROM faces").fetchall()
    assert rows[0][0] == vectors[0].tobytes()


def test_wrong_missing_and_unwanted_keys_are_refused_at_open(tmp_path):
    key = key_file(tmp_path)
    directory, _ = filled(tmp_path, key)
    with pytest.raises(GalleryError, match="another key"):
        opened(directory, key_file(tmp_path, "other"))
    with pytest.raises(GalleryError, match="is encrypted: set store.encryption_key_file"):
        opened(directory, None)
    plain, _ = filled(tmp_path / "p", None)
    with pytest.raises(GalleryError, match="is not encrypted"):
        opened(plain, key)


@pytest.mark.parametrize("content", [b"abcd" * 8 + b"\n", b"00" * 16, b"00" * 33, b"zz" * 32, b""])
def test_a_malformed_key_file_is_an_input_error_naming_it(tmp_path, content):
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="bad.key"):
        opened(tmp_path / "s", bad, create=True)
    with pytest.raises(InputError, match="missing.key"):
        opened(tmp_path / "s", tmp_path / "missing.key", create=True)


def test_a_blob_moved_onto_another_face_fails_to_decrypt(tmp_path):
    key = key_file(tmp_path)
    directory, _ = filled(tmp_path, key)
    db = sqlite3.connect(directory / "gallery.sqlite")
    (first,) = db.execute("SELECT crop FROM faces WHERE id = 1").fetchone()
    db.execute("UPDATE faces SET crop = ? WHERE id = 2", (first,))
    db.commit()
    db.close()
    with opened(directory, key) as store:
        with pytest.raises(GalleryError, match="face 2 crop"):
            store.persons.faces_of("alice")


def run_cli(*args: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "argusnet.cli", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=120)


def test_rekey_then_old_key_refused_new_key_works(tmp_path):
    old, new = key_file(tmp_path, "old"), key_file(tmp_path, "new")
    directory, vectors = filled(tmp_path, old)
    config = tmp_path / "argusnet.yaml"
    config.write_text(f"store:\n  type: local\n  path: {directory}\n  encryption_key_file: {old}\n")
    done = run_cli("store", "rekey", "--new-key-file", str(new), config=config)
    assert done.returncode == 0, done.stderr
    with pytest.raises(GalleryError, match="another key"):
        opened(directory, old)
    with opened(directory, new) as store:
        assert store.persons.search(vectors[1:2], 1)[0][0].name == "alice"
        assert store.media.get_crop("cam1/7").startswith(JPEG_MAGIC)
        assert len(store.visitors.gallery.all_faces()) == 1
        assert store.negatives.search(negative_vectors()[1:], 1)[0][0].name == "alice"
        assert len(store.negatives.faces_of("alice")) == 2
    assert "negatives 2" in done.stdout, done.stdout
    again = run_cli("store", "rekey", "--new-key-file", str(new), config=config)  # a rerun after a crash finishes
    assert again.returncode == 0 and "persons already on the new key" in again.stdout, again.stderr
    assert "negatives already on the new key" in again.stdout
    stranger = key_file(tmp_path, "stranger")
    config.write_text(f"store:\n  type: local\n  path: {directory}\n  encryption_key_file: {stranger}\n")
    refused = run_cli("store", "rekey", "--new-key-file", str(old), config=config)
    assert refused.returncode == 2 and "another key" in refused.stderr and "Traceback" not in refused.stderr
    wrong = tmp_path / "short.key"
    wrong.write_text("00" * 31)
    bad = run_cli("store", "rekey", "--new-key-file", str(wrong), config=config)
    assert bad.returncode == 2 and "short.key" in bad.stderr and "Traceback" not in bad.stderr


def test_faces_a_merge_kept_are_sealed_rekeyed_and_unmerged(tmp_path):
    from identity.merges import merge_visitor, unmerge_visitor
    from store.local.store import rekey_local

    old, new = key_file(tmp_path, "old"), key_file(tmp_path, "new")
    directory, _ = filled(tmp_path, old)
    vector = unit(np.random.default_rng(5), 1)[0]
    with opened(directory, old) as store:
        merge_visitor(store, "visitor-1", "alice")
        assert store.visitors.merge_undo("visitor-1").faces == 1
    db = sqlite3.connect(directory / "visitors" / "gallery.sqlite")
    (blob,) = db.execute("SELECT embedding FROM merged_faces").fetchone()
    db.close()
    assert vector.tobytes() not in blob and vector[:8].tobytes() not in blob
    rekey_local(directory, Cipher(load_key(old), "old"), Cipher(load_key(new), "new"), GalleryConfig())
    with opened(directory, new) as store:
        assert unmerge_visitor(store, "visitor-1", "test").faces_restored == 1
        (restored,) = store.visitors.faces_of("visitor-1")
        np.testing.assert_array_equal(restored.embedding, vector)
        assert store.visitors.match_or_create([face(vector)], 0.9, 5).visitor == "visitor-1"
