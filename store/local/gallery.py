"""The enrolled gallery: persons and their faces in SQLite (the source of truth) plus a FAISS index file.

Layout of a gallery directory::

    gallery.sqlite   persons, faces (embedding, model, aligned crop as JPEG, crop landmarks, source, created), meta
    index.faiss      the FAISS index of every face embedding, written atomically after each change
    index.json       {"generation": G, "faces": N, "sha256": H}: the SQLite generation the index file was written
                     for, and the index file's hash (two processes writing at once can pair one's index with the
                     other's json: the hash tells, and the index is rebuilt)

Schema version 2 added the ``merges`` table (a visitor merged into a person); a version 1 gallery is upgraded in
place when it is opened.

A merge keeps what an unmerge needs (`identity.merges.unmerge_visitor`): the visitor's faces move, rows and sealed
blobs as they were, from ``faces`` to ``merged_faces`` (no index holds them: they answer no search), and
``merge_undo`` keeps its created / last-seen times, the person's face ids a promote added and the live tracks the
merge renamed. Face ids are never handed out again while a kept face holds one, so an unmerge moves the rows back
unchanged. Kept faces go with an erasure of the visitor or the person (``erase_merges``), with the visitor
retention (``expire_merges``: the merge record stays, the undo is blocked), and with a rekey's re-encryption like
every face. These two tables came without a schema version change (an older ArgusNet ignores them); they are
created when a gallery is opened.

Every change runs in one SQLite transaction that also bumps ``meta.generation``; the index file is rewritten
after the commit. A crash in between leaves an index whose generation is behind: it is rebuilt from SQLite on
the next open, as is a missing or unreadable one. A gallery records the embedder model it was built with and
refuses embeddings of another (`argusnet gallery reembed` converts it).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import simplejpeg

from shared.errors import GalleryError, GalleryExistsError
from shared.files import atomic_write
from shared.names import check_person_name
from store.codec import merge_undo_from_json, merge_undo_json, undo_blocked
from store.config import GalleryConfig
from store.crypto import META_KEY, Cipher, check_key, seal, unseal
from store.face_index import FaceIndex, rank_persons
from store.local.audit import AUDIT_FILE, SUBJECTS_FILE
from store.faults import as_fault
from store.local.sqlite import connect_wal
from store.types import FaceSample, MergeUndo, PersonHit, PersonInfo, StoredFace, TrackRef, VisitorMatch

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DB_FILE = "gallery.sqlite"
GALLERY_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON",
                   "PRAGMA secure_delete=ON",  # a removed face's embedding and crop are zeroed on disk
                   "PRAGMA busy_timeout=10000")
INDEX_FILE = "index.faiss"
INDEX_META_FILE = "index.json"
# Files ArgusNet's own set-up writes into a local store's directory before its galleries may exist (`argusnet
# dashboard user add` before the first `argusnet up`, `up`'s site lock): a gallery is created among them
USERS_FILE = "dashboard-users.json"
SESSION_KEY_FILE = "dashboard-session.key"
REVOKED_FILE = "dashboard-revoked.json"
UP_LOCK_FILE = "argusnet-up.lock"
SET_UP_FILES = frozenset({USERS_FILE, SESSION_KEY_FILE, REVOKED_FILE, UP_LOCK_FILE, AUDIT_FILE, SUBJECTS_FILE})
CROP_JPEG_QUALITY = 95
INDEX_WRITE_INTERVAL_S = 10.0  # a busy gallery (visitors) rewrites its index file at most this often

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE persons (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL, last_seen REAL NOT NULL);
CREATE TABLE faces (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    crop BLOB NOT NULL,
    landmarks BLOB NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX faces_person ON faces(person_id);
CREATE TABLE rejections (
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    not_name TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (person_id, not_name)
);
"""
# version 1 -> 2: a visitor merged into a person (its name resolves to the person)
UPGRADE_2 = """
CREATE TABLE IF NOT EXISTS merges (name TEXT PRIMARY KEY, into_name TEXT NOT NULL, created REAL NOT NULL);
"""
# What a merge keeps for an unmerge (no version change: an older ArgusNet ignores these tables), created on open.
MERGE_UNDO_TABLES = """
CREATE TABLE IF NOT EXISTS merge_undo (
    name TEXT PRIMARY KEY,
    into_name TEXT NOT NULL,
    merged_at REAL NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    undo TEXT NOT NULL,
    faces_expired REAL
);
CREATE TABLE IF NOT EXISTS merged_faces (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    embedding BLOB NOT NULL,
    crop BLOB NOT NULL,
    landmarks BLOB NOT NULL,
    source TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS merged_faces_name ON merged_faces(name);
"""




def _foreign_entries(directory: Path) -> list[str]:
    """What in ``directory`` is neither a gallery nor one of ArgusNet's own set-up files (`SET_UP_FILES`)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in SET_UP_FILES)


def _rename_into_place(staging: Path, directory: Path) -> None:
    """rename(2) replaces an empty directory atomically and fails on a non-empty one. A directory holding only
    set-up files gets the gallery's files moved in, the database last with link(2), which fails when another
    process linked its own first: either way the gallery appears whole or not at all."""
    if directory.is_dir() and any(directory.iterdir()) and not _foreign_entries(directory):
        _move_files_into(staging, directory)
        return
    try:
        staging.rename(directory)
    except OSError as exc:
        if directory.is_dir() and any(directory.iterdir()):
            raise GalleryExistsError(f"cannot create a gallery in {directory}: another process created it "
                                     "first") from exc
        raise GalleryError(f"cannot create a gallery in {directory}: {exc}") from exc


def _move_files_into(staging: Path, directory: Path) -> None:
    try:
        for path in staging.iterdir():
            if path.name != DB_FILE:
                path.replace(directory / path.name)
        os.link(staging / DB_FILE, directory / DB_FILE)
    except FileExistsError as exc:
        raise GalleryExistsError(f"cannot create a gallery in {directory}: another process created it "
                                 "first") from exc
    except OSError as exc:
        raise GalleryError(f"cannot create a gallery in {directory}: {exc}") from exc
    _remove_staging(staging)  # the database lives on under its link in the directory


def _remove_staging(staging: Path) -> None:
    """Clean up after a failed create; a failure to clean up is logged, the create's own error is what raises."""
    try:
        shutil.rmtree(staging)
    except OSError as exc:
        log.warning("could not remove the unfinished gallery %s: %s", staging, exc)


def gallery_aad(salt: str, what: str) -> bytes:
    """Associated data of a sealed blob of the gallery whose ``meta.created`` is ``salt``."""
    return f"gallery/{salt}/{what}".encode()


def rekey_gallery(directory: Path, old: Cipher | None, new: Cipher) -> int | None:
    """Re-encrypt every face's embedding and crop from ``old`` (None: a plain gallery) to ``new`` in one SQLite
    transaction that also records ``new``'s key check value and bumps the generation (the index file, sealed with
    the old key, is rebuilt on the next open). How many faces; None when the gallery is already on ``new``."""
    path = Path(directory) / DB_FILE
    db = Gallery._connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            count = _rekey_rows(db, path, old, new)
            db.execute("COMMIT" if count is not None else "ROLLBACK")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    finally:
        db.close()
    return count


def _rekey_rows(db: sqlite3.Connection, path: Path, old: Cipher | None, new: Cipher) -> int | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
    recorded = None if row is None else row[0]
    if recorded == new.check_value:
        return None
    check_key(recorded, old, f"gallery {path.parent}")
    salt_row = db.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()
    salt = "" if salt_row is None else salt_row[0]
    rows = db.execute("SELECT id, embedding, crop FROM faces").fetchall()
    for face_id, embedding, crop in rows:
        blobs = []
        for field, blob in (("embedding", embedding), ("crop", crop)):
            aad = gallery_aad(salt, f"face/{face_id}/{field}")
            blobs.append(new.encrypt(unseal(old, blob, aad, f"{path}: face {face_id} {field}"), aad))
        db.execute("UPDATE faces SET embedding = ?, crop = ? WHERE id = ?", (*blobs, face_id))
    _rekey_merged(db, path, salt, old, new)
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (META_KEY, new.check_value))
    generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]) + 1
    db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
    return len(rows)


def _rekey_merged(db: sqlite3.Connection, path: Path, salt: str, old: Cipher | None, new: Cipher) -> None:
    """The faces merges kept aside, re-sealed like every face (the table is missing in a gallery this version of
    ArgusNet never opened: nothing to do)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'merged_faces'").fetchone() is None:
        return
    for face_id, embedding, crop in db.execute("SELECT id, embedding, crop FROM merged_faces").fetchall():
        blobs = []
        for field, blob in (("embedding", embedding), ("crop", crop)):
            aad = gallery_aad(salt, f"face/{face_id}/{field}")
            blobs.append(new.encrypt(unseal(old, blob, aad, f"{path}: kept face {face_id} {field}"), aad))
        db.execute("UPDATE merged_faces SET embedding = ?, crop = ? WHERE id = ?", (*blobs, face_id))


def _encode_crop(crop: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(crop, dtype=np.uint8), quality=CROP_JPEG_QUALITY,
                                  colorspace="RGB")


class Gallery:
    """Open with `Gallery.create` or `Gallery.open`; use as a context manager. Thread-safe."""

    def __init__(self, directory: Path, db: sqlite3.Connection, cfg: GalleryConfig,
                 cipher: Cipher | None = None) -> None:
        self.directory = directory
        self.cfg = cfg
        self._db = db
        self._lock = threading.RLock()
        self.model = self._meta("model")
        self.dim = int(self._meta("dim"))
        row = db.execute("SELECT value FROM meta WHERE key = ?", (META_KEY,)).fetchone()
        check_key(None if row is None else row[0], cipher, f"gallery {directory}")
        self._cipher = cipher
        salt = db.execute("SELECT value FROM meta WHERE key = 'created'").fetchone()
        self._salt = "" if salt is None else salt[0]  # binds blobs to this gallery (face ids recur across them)
        self._owner: dict[int, str] = {}
        self._index = FaceIndex(self.dim, cfg)
        self._generation = -1
        self._pending_generation = -1
        self._dirty = False
        self._written_at = float("-inf")
        self._index_write_failed = False
        self._load()

    # ----- opening -----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, directory: Path, model: str, dim: int, cfg: GalleryConfig,
               cipher: Cipher | None = None) -> "Gallery":
        """A new empty gallery. Built in a hidden sibling directory and renamed into place, so another process
        (a second worker creating the same visitor gallery) sees no gallery or a complete one, never a part;
        the loser of such a race gets `GalleryExistsError`."""
        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or (directory / DB_FILE).exists()
                                   or _foreign_entries(directory)):
            raise GalleryExistsError(f"cannot create a gallery in {directory}: it exists and is not an empty "
                                     "directory (nor one holding only ArgusNet's set-up files)")
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.creating-"))
        try:
            db = cls._connect(staging / DB_FILE)
            try:
                db.executescript(SCHEMA + UPGRADE_2)
                db.executemany("INSERT INTO meta VALUES (?, ?)", [
                    ("schema_version", str(SCHEMA_VERSION)), ("model", model), ("dim", str(dim)),
                    ("generation", "0"), ("created", repr(time.time()))])
                if cipher is not None:
                    db.execute("INSERT INTO meta VALUES (?, ?)", (META_KEY, cipher.check_value))
            finally:
                db.close()
            _rename_into_place(staging, directory)
        except BaseException:
            _remove_staging(staging)
            raise
        return cls.open(directory, cfg, cipher)

    @classmethod
    def open(cls, directory: Path, cfg: GalleryConfig, cipher: Cipher | None = None) -> "Gallery":
        directory = Path(directory)
        path = directory / DB_FILE
        if not directory.is_dir():
            raise GalleryError(f"no gallery at {directory}: the directory does not exist (enrol someone first: "
                               "`argusnet enroll NAME PHOTO... --gallery DIR`)")
        if not path.is_file():
            raise GalleryError(f"{directory} is not an ArgusNet gallery (no {DB_FILE} in it)")
        db = cls._connect(path)
        try:  # on any refusal the connection is closed before the error leaves
            cls._upgrade(db, path)
            db.executescript(MERGE_UNDO_TABLES)  # idempotent
            return cls(directory, db, cfg, cipher)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise GalleryError(f"{path} is not a readable gallery database: {exc}") from exc
        except BaseException:
            db.close()
            raise

    @staticmethod
    def _upgrade(db: sqlite3.Connection, path: Path) -> None:
        """Refuse a version this code does not know; upgrade version 1 in place (one transaction)."""
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is not None and version[0] == "1":
            db.execute("BEGIN IMMEDIATE")
            try:
                again = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
                if again[0] == "1":  # another process may have upgraded it while this one waited for the lock
                    db.execute(UPGRADE_2.strip())
                    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                    log.info("gallery %s upgraded from schema version 1 to %d", path, SCHEMA_VERSION)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            version = (str(SCHEMA_VERSION),)
        if version is None or version[0] != str(SCHEMA_VERSION):
            raise GalleryError(f"{path}: gallery schema version {version and version[0]} is not supported "
                               f"(this ArgusNet reads versions 1 and {SCHEMA_VERSION})")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        """A connection to the gallery database (read-only on a disk that cannot take SQLite's shared-memory file,
        `store.local.sqlite.connect_wal`: listing works on a full disk, a change fails as a store fault)."""
        try:
            db, _ = connect_wal(path, GALLERY_PRAGMAS)
        except sqlite3.Error as exc:
            fault = as_fault(str(path), "opening the gallery database", exc)
            raise fault or GalleryError(f"{path} is not a readable gallery database: {exc}") from exc
        return db

    def close(self) -> None:
        with self._lock:
            self.flush()
            self._db.close()

    def flush(self) -> None:
        """Write the index file now if changes are pending (``close`` does this too)."""
        with self._lock:
            if self._dirty:
                self._write_index(self._index, self._generation)

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- encryption at rest (store.crypto) ----------------------------------------------------------------
    def _aad(self, what: str) -> bytes:
        return gallery_aad(self._salt, what)

    def _seal(self, data: bytes, face_id: int, field: str) -> bytes:
        return seal(self._cipher, data, self._aad(f"face/{face_id}/{field}"))

    def _open_blob(self, blob: bytes, face_id: int, field: str) -> bytes:
        return unseal(self._cipher, blob, self._aad(f"face/{face_id}/{field}"),
                      f"{self.directory / DB_FILE}: face {face_id} {field}")

    # ----- state -------------------------------------------------------------------------------------------
    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise GalleryError(f"{self.directory / DB_FILE}: meta key {key!r} is missing")
        return row[0]

    def _db_generation(self) -> int:
        return int(self._meta("generation"))

    def _load(self) -> None:
        """Owners from SQLite; the index from its file when it matches this generation, else rebuilt. A gallery
        that another process re-embedded with another model is refused (this process embeds with the old one)."""
        model = self._meta("model")
        if model != self.model:
            raise GalleryError(f"gallery {self.directory} was re-embedded with {model} by another process; this "
                               f"process embeds with {self.model}: restart it with the new model")
        generation = self._db_generation()
        rows = self._db.execute("SELECT faces.id, persons.name FROM faces JOIN persons ON persons.id = "
                                "faces.person_id").fetchall()
        self._owner = {int(face_id): name for face_id, name in rows}
        self._index = self._index_from_file(generation) or self._index_from_db()
        self._generation = generation

    def _index_from_file(self, generation: int) -> FaceIndex | None:
        index_path, meta_path = self.directory / INDEX_FILE, self.directory / INDEX_META_FILE
        if not index_path.is_file() or not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("generation") != generation or meta.get("faces") != len(self._owner):
                log.info("gallery %s: index file is stale (generation %s, expected %s); rebuilding",
                         self.directory, meta.get("generation"), generation)
                return None
            data = index_path.read_bytes()
            if meta.get("sha256") != hashlib.sha256(data).hexdigest():  # two processes' writes interleaved
                log.info("gallery %s: index file does not match index.json; rebuilding", self.directory)
                return None
            plain = unseal(self._cipher, data, self._aad("index"), str(index_path))
            index = FaceIndex.deserialize(plain, self.dim, self.cfg)
        except (OSError, ValueError, RuntimeError, GalleryError) as exc:
            log.warning("gallery %s: index file unreadable (%s); rebuilding from the database", self.directory, exc)
            return None
        if set(int(i) for i in index.ids()) != set(self._owner):
            log.warning("gallery %s: index ids disagree with the database; rebuilding", self.directory)
            return None
        return index

    def _index_from_db(self) -> FaceIndex:
        index = FaceIndex(self.dim, self.cfg)
        ids, vectors = [], []
        for face_id, blob in self._db.execute("SELECT id, embedding FROM faces"):
            ids.append(face_id)
            vectors.append(np.frombuffer(self._open_blob(blob, face_id, "embedding"), dtype=np.float32))
        if ids:
            index.add(np.asarray(ids, np.int64), np.stack(vectors))
        if ids or (self.directory / INDEX_FILE).exists():
            self._write_index(index, self._db_generation())
        return index

    def _write_index(self, index: FaceIndex, generation: int) -> bool:
        """Write the index file (a cache of SQLite). A file system that cannot take it (full, read-only, an I/O
        error) costs no operation and no open: the index stays in memory, marked dirty (written on a later
        change, or at close), and the failure is logged once until a write succeeds. False when it failed."""
        self._dirty, self._written_at = False, time.monotonic()
        data = seal(self._cipher, index.serialize(), self._aad("index"))
        meta = {"generation": generation, "faces": len(index), "sha256": hashlib.sha256(data).hexdigest()}
        try:
            atomic_write(self.directory / INDEX_FILE, data, durable=True)
            atomic_write(self.directory / INDEX_META_FILE, json.dumps(meta).encode(), durable=True)
        except OSError as exc:
            self._dirty = True
            if not self._index_write_failed:
                log.warning("gallery %s: cannot write its index file (%s); it is rebuilt from the database on the "
                            "next open until a write succeeds", self.directory, exc)
            self._index_write_failed = True
            return False
        self._index_write_failed = False
        return True

    def sync(self) -> bool:
        """Reload when another process changed the gallery (an enrolment while a worker runs). True if it did."""
        with self._lock:
            if self._db_generation() == self._generation:
                return False
            self._load()
            return True

    @property
    def face_count(self) -> int:
        return len(self._owner)

    @property
    def index_kind(self) -> str:
        return self._index.kind

    # ----- changes -----------------------------------------------------------------------------------------
    def _check_embeddings(self, model: str, embeddings: np.ndarray) -> np.ndarray:
        if model != self.model:
            raise GalleryError(f"gallery {self.directory} holds {self.model} embeddings, refusing {model} ones")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings: expected shape (N, {self.dim}), got {embeddings.shape}")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("embeddings: contain NaN or infinity")
        return embeddings

    def _check_faces(self, faces: Sequence[FaceSample]) -> np.ndarray:
        if not faces:
            raise ValueError("expected at least one face, got none")
        for i, face in enumerate(faces):
            landmarks = np.asarray(face.landmarks)
            if landmarks.shape != (5, 2):
                raise ValueError(f"face {i}: expected landmarks of shape (5, 2), got {landmarks.shape}")
            crop = np.asarray(face.crop)
            if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
                raise ValueError(f"face {i}: expected an (H, W, 3) uint8 crop, got {crop.shape} {crop.dtype}")
        return self._check_embeddings(self.model, np.stack([np.asarray(f.embedding, np.float32) for f in faces]))

    def add_person(self, name: str, faces: Sequence[FaceSample], model: str | None = None) -> list[int]:
        """Add faces to ``name`` (created if new), all or nothing. Returns the new face ids. ``model``: the
        embedder that made the embeddings, when it may differ from the gallery's (refused then). The name rule
        (`shared.names`) is the last line of defence: a name no event or worker batch can carry is refused."""
        return self._add_faces(check_person_name(name), faces, model)

    def _add_faces(self, name: str, faces: Sequence[FaceSample], model: str | None = None) -> list[int]:
        """``add_person`` without the name rule (a visitor's faces, under the visitor id the store minted)."""
        if model is not None and model != self.model:
            raise GalleryError(f"gallery {self.directory} holds {self.model} embeddings, refusing {model} ones")
        embeddings = self._check_faces(faces)
        with self._lock:
            self._sync()
            with self._transaction():
                ids = self._insert_faces(name, faces, embeddings, time.time())
            self._committed()
            return ids

    def _insert_faces(self, name: str, faces: Sequence[FaceSample], embeddings: np.ndarray, now: float) -> list[int]:
        """Inside a transaction: the person (created if new) and their faces, in SQLite and the index."""
        person_id = self._person_id(name, create_at=now)
        self._db.execute("UPDATE persons SET last_seen = ? WHERE id = ?", (now, person_id))
        # ids are chosen here (inside the write transaction) so the sealed blobs can name them
        first = int(self._db.execute("SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM faces), (SELECT COALESCE(MAX(id), "
                                     "0) FROM merged_faces)) + 1").fetchone()[0])  # a kept face's id is taken
        ids = list(range(first, first + len(faces)))
        self._db.executemany(
            "INSERT INTO faces (id, person_id, model, embedding, crop, landmarks, source, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(face_id, person_id, self.model, self._seal(embeddings[i].tobytes(), face_id, "embedding"),
              self._seal(_encode_crop(face.crop), face_id, "crop"), np.asarray(face.landmarks, np.float32).tobytes(),
              str(face.source), now) for i, (face_id, face) in enumerate(zip(ids, faces))])
        self._index.add(np.asarray(ids, np.int64), embeddings)
        self._owner.update((i, name) for i in ids)
        return ids

    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, prefix: str,
                        max_faces: int) -> VisitorMatch:
        """One write transaction (SQLite's write lock serialises every process): pick up other processes' changes,
        search, then mark the best match seen or mint ``prefix-N`` with the first ``max_faces`` faces."""
        embeddings = self._check_faces(faces)
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._sync()
                match = self._best_match(embeddings, threshold)
                if match is not None:
                    self._db.execute("UPDATE persons SET last_seen = MAX(last_seen, ?) WHERE name = ?",
                                     (now, match.visitor))
                    self._db.execute("COMMIT")
                    return match
                name = f"{prefix}-{self._next_number(prefix)}"
                self._insert_faces(name, faces[:max_faces], embeddings[:max_faces], now)
                self._pending_generation = self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback_and_reload()
                raise
            self._committed()
            return VisitorMatch(name, None, True)

    def _best_match(self, embeddings: np.ndarray, threshold: float) -> VisitorMatch | None:
        if not self._owner:
            return None
        best: VisitorMatch | None = None
        for hits in self._search_locked(embeddings, 4):
            if hits and hits[0].similarity >= threshold and (best is None or hits[0].similarity > best.similarity):
                best = VisitorMatch(hits[0].name, hits[0].similarity, False)
        return best

    def _next_number(self, prefix: str) -> int:
        """Inside a transaction: the next number of the ``prefix`` counter (never handed out before)."""
        key = f"counter:{prefix}"
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        number = 1 if row is None else int(row[0]) + 1
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(number)))
        return number

    def remove_person(self, name: str, missing_ok: bool = False) -> int:
        """Remove a person and all their faces; returns how many faces went. ``missing_ok``: a person who is not
        there (another process removed them first) is 0 faces removed, not an error."""
        with self._lock:
            self._sync()
            row = self._db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
            if row is None:
                if missing_ok:
                    return 0
                raise GalleryError(f"no person named {name!r} in gallery {self.directory}")
            ids = [face_id for face_id, owner in self._owner.items() if owner == name]
            with self._transaction():
                self._db.execute("DELETE FROM persons WHERE id = ?", (row[0],))
            self._index.remove(np.asarray(ids, np.int64))
            for face_id in ids:
                del self._owner[face_id]
            self._committed()
            return len(ids)

    def remove_face(self, name: str, face_id: int) -> bool:
        """Remove one face of ``name`` (the person goes with their last face) in one write transaction that first
        picks up other processes' changes; False, nothing changed, when ``name`` has no face ``face_id``."""
        face_id = int(face_id)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._sync()
                row = self._db.execute("SELECT persons.id FROM faces JOIN persons ON persons.id = faces.person_id "
                                       "WHERE faces.id = ? AND persons.name = ?", (face_id, name)).fetchone()
                if row is None:
                    self._db.execute("ROLLBACK")
                    return False
                self._db.execute("DELETE FROM faces WHERE id = ?", (face_id,))
                self._db.execute("DELETE FROM persons WHERE id = ? AND NOT EXISTS (SELECT 1 FROM faces WHERE "
                                 "person_id = ?)", (row[0], row[0]))
                self._pending_generation = self._bump()
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback_and_reload()
                raise
            self._index.remove(np.asarray([face_id], np.int64))
            self._owner.pop(face_id, None)
            self._committed()
            return True

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        """Switch the gallery to ``model``: every face gets a new embedding, in one transaction."""
        with self._lock:
            self._sync()
            if set(embeddings) != set(self._owner):
                raise GalleryError(f"reembed must cover every face: got {len(embeddings)} of {len(self._owner)}")
            with self._transaction():
                for face_id, vector in embeddings.items():
                    vector = np.ascontiguousarray(vector, dtype=np.float32)
                    if vector.shape != (dim,):
                        raise ValueError(f"embedding of face {face_id}: expected shape ({dim},), got {vector.shape}")
                    self._db.execute("UPDATE faces SET embedding = ?, model = ? WHERE id = ?",
                                     (self._seal(vector.tobytes(), face_id, "embedding"), model, face_id))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'model'", (model,))
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'dim'", (str(dim),))
            self.model, self.dim = model, dim
            self._index = self._index_from_db()
            self._generation = self._pending_generation

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction that bumps the generation; on any error it is rolled back and state reloaded.
        Callers hold the lock and call ``_committed`` (or reload) afterwards."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._pending_generation = self._bump()
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback_and_reload()
            raise

    def _person_id(self, name: str, create_at: float) -> int:
        row = self._db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
        if row is not None:
            return int(row[0])
        return int(self._db.execute("INSERT INTO persons (name, created, last_seen) VALUES (?, ?, ?)",
                                    (name, create_at, create_at)).lastrowid)

    def _bump(self) -> int:
        generation = self._db_generation() + 1
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
        return generation

    def _sync(self) -> None:
        """Before a change: pick up changes another process made, so generations stay in step."""
        if self._db_generation() != self._generation:
            self._load()

    def _rollback_and_reload(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._load()

    def _committed(self) -> None:
        """After a commit: the index file is rewritten at most every INDEX_WRITE_INTERVAL_S (and on close). It is
        only a cache of SQLite, so a crash before the write costs a rebuild on the next open, never data."""
        self._generation = self._pending_generation
        self._dirty = True
        if time.monotonic() - self._written_at >= INDEX_WRITE_INTERVAL_S:
            self._write_index(self._index, self._generation)

    def allocate_name(self, prefix: str) -> str:
        """A fresh ``prefix-N`` name, never handed out before by this gallery (a counter kept in SQLite)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                number = self._next_number(prefix)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return f"{prefix}-{number}"

    def seen(self, name: str, faces: Sequence[FaceSample], max_faces: int, when: float) -> None:
        """Mark ``name`` seen at ``when`` and add faces up to ``max_faces`` in all; a person gone meanwhile (merged,
        promoted, expired) is left alone."""
        have = next((p.faces for p in self.persons() if p.name == name), None)
        if have is None:
            return
        self.touch(name, when)
        room = max_faces - have
        if room > 0 and faces:
            self._add_faces(name, list(faces[:room]))

    def reject(self, name: str, not_name: str) -> None:
        """Record that ``name`` is not ``not_name`` (an operator's negative evidence)."""
        with self._lock:
            self._sync()
            row = self._db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"no person named {name!r} in gallery {self.directory}")
            with self._transaction():
                self._db.execute("INSERT OR REPLACE INTO rejections VALUES (?, ?, ?)", (row[0], not_name, time.time()))
            self._committed()

    def touch(self, name: str, when: float) -> None:
        """Record that ``name`` was seen at ``when`` (unix s) without adding a face (no index change)."""
        with self._lock:
            self._db.execute("UPDATE persons SET last_seen = MAX(last_seen, ?) WHERE name = ?", (when, name))

    def rejections(self) -> dict[str, frozenset[str]]:
        """person -> the names an operator said they are not."""
        with self._lock:
            rows = self._db.execute("SELECT persons.name, rejections.not_name FROM rejections JOIN persons ON "
                                    "persons.id = rejections.person_id").fetchall()
        out: dict[str, set[str]] = {}
        for name, not_name in rows:
            out.setdefault(name, set()).add(not_name)
        return {k: frozenset(v) for k, v in out.items()}

    def expire(self, older_than: float) -> list[str]:
        """Remove every person whose newest face was added before ``older_than`` (unix s); their names."""
        gone = [p.name for p in self.persons() if p.last_seen < older_than]
        for name in gone:  # several workers expire the same shared visitor gallery: whoever is first removes
            self.remove_person(name, missing_ok=True)
        return gone

    # ----- queries -----------------------------------------------------------------------------------------
    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """For each query, persons ranked by their best face's cosine similarity (each person once)."""
        embeddings = self._check_embeddings(self.model, embeddings)
        with self._lock:
            return self._search_locked(embeddings, k)

    def _search_locked(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        return rank_persons(self._index.search(embeddings, k), self._owner)

    def persons(self) -> list[PersonInfo]:
        with self._lock:
            rows = self._db.execute("SELECT persons.name, COUNT(faces.id), persons.created, persons.last_seen FROM "
                                    "persons LEFT JOIN faces ON faces.person_id = persons.id GROUP BY persons.id "
                                    "ORDER BY persons.name")
            return [PersonInfo(name, int(count), float(created), float(last)) for name, count, created, last in rows]

    def _stored_faces(self, where: str = "", args: tuple = ()) -> list[StoredFace]:
        with self._lock:
            rows = self._db.execute("SELECT faces.id, persons.name, faces.crop, faces.landmarks, faces.embedding, "
                                    "faces.source, faces.created FROM faces JOIN persons ON persons.id = "
                                    f"faces.person_id {where} ORDER BY faces.id", args).fetchall()
        return [StoredFace(int(face_id), name,
                           simplejpeg.decode_jpeg(self._open_blob(crop, face_id, "crop"), colorspace="RGB"),
                           np.frombuffer(landmarks, dtype=np.float32).reshape(5, 2).copy(),
                           np.frombuffer(self._open_blob(embedding, face_id, "embedding"), dtype=np.float32).copy(),
                           source, float(created))
                for face_id, name, crop, landmarks, embedding, source, created in rows]

    def all_faces(self) -> list[StoredFace]:
        return self._stored_faces()

    def faces_of(self, name: str, missing_ok: bool = False) -> list[StoredFace]:
        """Every stored face of one person (GalleryError when unknown; ``missing_ok``: [] then)."""
        faces = self._stored_faces("WHERE persons.name = ?", (name,))
        if not faces and not missing_ok:
            raise GalleryError(f"no person named {name!r} in gallery {self.directory}")
        return faces


    # ----- merges ------------------------------------------------------------------------------------------
    def record_merge(self, name: str, into: str, person_faces: Sequence[int] = (),
                     live_tracks: Sequence[TrackRef] = ()) -> int:
        """``name`` is ``into`` from now on: its faces leave this gallery (they stop answering searches) and are
        kept aside with ``merge_undo_json(person_faces, live_tracks)`` (module docstring), and the merge is recorded;
        how many faces went."""
        with self._lock:
            self._sync()
            ids = [face_id for face_id, owner in self._owner.items() if owner == name]
            now = time.time()
            with self._transaction():
                undo = merge_undo_json(person_faces, live_tracks)
                self._db.execute("INSERT OR REPLACE INTO merge_undo SELECT name, ?, ?, created, last_seen, ?, NULL "
                                 "FROM persons WHERE name = ?", (into, now, undo, name))
                self._db.execute("INSERT INTO merged_faces SELECT faces.id, persons.name, faces.model, "
                                 "faces.embedding, faces.crop, faces.landmarks, faces.source, faces.created FROM faces "
                                 "JOIN persons ON persons.id = faces.person_id WHERE persons.name = ?", (name,))
                self._db.execute("DELETE FROM persons WHERE name = ?", (name,))
                self._db.execute("INSERT OR REPLACE INTO merges VALUES (?, ?, ?)", (name, into, now))
            self._index.remove(np.asarray(ids, np.int64))
            for face_id in ids:
                del self._owner[face_id]
            self._committed()
            return len(ids)

    def merged_into(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT into_name FROM merges WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def merge_undo(self, name: str) -> MergeUndo | None:
        """What the merge of ``name`` kept (None: nothing); ``blocked`` says why it cannot be undone."""
        with self._lock:
            row = self._db.execute("SELECT into_name, merged_at, undo, faces_expired FROM merge_undo WHERE name = ?",
                                   (name,)).fetchone()
            if row is None:
                return None
            models = [m for (m,) in self._db.execute("SELECT DISTINCT model FROM merged_faces WHERE name = ?",
                                                     (name,))]
            count = int(self._db.execute("SELECT COUNT(*) FROM merged_faces WHERE name = ?", (name,)).fetchone()[0])
        into, merged_at, undo, expired = row
        blocked = undo_blocked(name, expired, models, self.model, name in set(self._owner.values()))
        return merge_undo_from_json(undo, name, str(into), float(merged_at), count, blocked)

    def restore_merged(self, name: str) -> int:
        """Undo ``record_merge`` in one transaction: the kept faces (rows as they were) back under ``name`` with its
        created / last-seen times, the merge and its undo record gone; how many faces."""
        with self._lock:
            self._sync()
            undo = self.merge_undo(name)
            if undo is None:
                raise GalleryError(f"{name} was never merged in gallery {self.directory}, or its merge kept nothing "
                                   "to undo")
            if undo.blocked is not None:
                raise GalleryError(f"the merge of {name} into {undo.person} can no longer be undone: {undo.blocked}")
            rows = self._db.execute("SELECT id, embedding FROM merged_faces WHERE name = ? ORDER BY id",
                                    (name,)).fetchall()
            vectors = [np.frombuffer(self._open_blob(blob, face_id, "embedding"), np.float32) for face_id, blob in rows]
            with self._transaction():
                self._db.execute("INSERT INTO persons (name, created, last_seen) SELECT name, created, last_seen FROM "
                                 "merge_undo WHERE name = ?", (name,))
                self._db.execute("INSERT INTO faces SELECT merged_faces.id, persons.id, merged_faces.model, "
                                 "merged_faces.embedding, merged_faces.crop, merged_faces.landmarks, "
                                 "merged_faces.source, merged_faces.created FROM merged_faces JOIN persons ON "
                                 "persons.name = merged_faces.name WHERE merged_faces.name = ?", (name,))
                for table in ("merged_faces", "merge_undo", "merges"):
                    self._db.execute(f"DELETE FROM {table} WHERE name = ?", (name,))
            if rows:
                self._index.add(np.asarray([i for i, _ in rows], np.int64), np.stack(vectors))
                self._owner.update((int(i), name) for i, _ in rows)
            self._committed()
            return len(rows)

    def expire_merges(self, older_than: float) -> int:
        """Delete the faces kept by merges made before ``older_than`` (unix s); the undo record stays, blocked."""
        with self._lock:
            due = self._db.execute("SELECT COUNT(*) FROM merge_undo WHERE merged_at < ? AND faces_expired IS NULL",
                                   (older_than,)).fetchone()[0]
            if not due:  # the usual case: no write, no new generation for every process to reload
                return 0
            self._sync()
            with self._transaction():
                gone = self._db.execute("DELETE FROM merged_faces WHERE name IN (SELECT name FROM merge_undo WHERE "
                                        "merged_at < ? AND faces_expired IS NULL)", (older_than,)).rowcount
                self._db.execute("UPDATE merge_undo SET faces_expired = ? WHERE merged_at < ? AND faces_expired IS "
                                 "NULL", (time.time(), older_than))
            self._committed()
            return gone

    def erase_merges(self, name: str) -> int:
        """Delete what the merges into or from ``name`` kept (faces and undo records); how many faces."""
        with self._lock:
            due = self._db.execute("SELECT COUNT(*) FROM merge_undo WHERE name = ? OR into_name = ?",
                                   (name, name)).fetchone()[0]
            if not due:
                return 0
            self._sync()
            with self._transaction():
                gone = self._db.execute("DELETE FROM merged_faces WHERE name IN (SELECT name FROM merge_undo WHERE "
                                        "name = ? OR into_name = ?) OR name = ?", (name, name, name)).rowcount
                self._db.execute("DELETE FROM merge_undo WHERE name = ? OR into_name = ?", (name, name))
            self._committed()
            return gone

    def remove_faces(self, name: str, face_ids: Sequence[int]) -> int:
        """Remove those of ``face_ids`` that are faces of ``name``, and ``name`` when no face is left; how many."""
        with self._lock:
            self._sync()
            ids = [int(i) for i in face_ids if self._owner.get(int(i)) == name]
            if not ids:
                return 0
            with self._transaction():
                self._db.executemany("DELETE FROM faces WHERE id = ?", [(i,) for i in ids])
                self._db.execute("DELETE FROM persons WHERE name = ? AND NOT EXISTS (SELECT 1 FROM faces WHERE "
                                 "faces.person_id = persons.id)", (name,))
            self._index.remove(np.asarray(ids, np.int64))
            for face_id in ids:
                del self._owner[face_id]
            self._committed()
            return len(ids)

    # ----- erasure -----------------------------------------------------------------------------------------
    def erase_references(self, name: str) -> tuple[int, int]:
        """Delete the rejections naming ``name`` and the merges into or from it; (rejections, merges) deleted."""
        with self._lock:
            self._sync()
            with self._transaction():
                rejections = self._db.execute("DELETE FROM rejections WHERE not_name = ?", (name,)).rowcount
                merges = self._db.execute("DELETE FROM merges WHERE name = ? OR into_name = ?", (name, name)).rowcount
            self._committed()
            return rejections, merges

    def checkpoint(self) -> bool:
        """Write the index file now (without removed faces: HNSW tombstones are compacted away) and truncate the
        WAL; False when another process's open read kept part of the WAL."""
        with self._lock:
            self.flush()
            try:
                busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise GalleryError(f"{self.directory / DB_FILE}: checkpoint failed: {exc}") from exc
        return busy == 0
