"""The local store's record database, ``store.sqlite`` in the store directory: the event log, the live tracks and
the index of crop files (and ``renamed_events``: which events a merge renamed, and their visitor flag before, so an
unmerge restores exactly those; a table added without a version change, created when an older file is opened). One
connection per process, shared by those three parts under one lock (WAL mode, so
workers and the dashboard on this host read and write it at once). ``secure_delete`` is on: a deleted row is
overwritten with zeros, and `checkpoint` empties the WAL after an erasure (`identity.erasure`)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Iterator

from shared.errors import GalleryError, StoreError
from store.faults import as_fault, fault_reason

log = logging.getLogger(__name__)

RECORDS_FILE = "store.sqlite"
RECORDS_SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL",
           "PRAGMA secure_delete=ON",  # deleted rows are zeroed, not left in free pages
           f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    capture_ts REAL NOT NULL,
    camera TEXT NOT NULL,
    name TEXT,
    body TEXT NOT NULL,
    crop TEXT,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS events_capture ON events(capture_ts);
CREATE INDEX IF NOT EXISTS events_camera ON events(camera, id);
CREATE INDEX IF NOT EXISTS events_name ON events(name, id);
CREATE TABLE IF NOT EXISTS live_tracks (
    camera TEXT NOT NULL,
    track INTEGER NOT NULL,
    name TEXT,
    body TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (camera, track)
);
CREATE TABLE IF NOT EXISTS cameras (
    camera TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    preview BLOB,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS renamed_events (
    event_id INTEGER PRIMARY KEY,
    old TEXT NOT NULL,
    new TEXT NOT NULL,
    visitor INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS renamed_events_names ON renamed_events(old, new);
CREATE TABLE IF NOT EXISTS media (key TEXT PRIMARY KEY, created REAL NOT NULL, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS erasures (digest TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS media_created ON media(created);
"""


def connect_wal(path: Path, pragmas: tuple[str, ...]) -> tuple[sqlite3.Connection, bool]:
    """A connection to the WAL-mode database ``path`` with ``pragmas`` run, and whether it is read-only.

    SQLite needs a shared-memory file beside a WAL database to read it. When the file system cannot give it one
    (a full disk, a read-only mount, an I/O error) and no WAL file with pages in it is beside the database
    (nobody has it open, so it is whole in its file), it is opened immutable and read-only instead: reading
    commands work on a full disk, and a write on it fails as a fault (the database is read-only). sqlite3.Error
    otherwise, for the caller to word."""
    existed = path.is_file() and path.stat().st_size > 0
    wal = Path(f"{path}-wal")
    whole = not wal.exists() or wal.stat().st_size == 0  # every committed page is in the database file
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        for pragma in pragmas:
            db.execute(pragma)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db, False
    except sqlite3.Error as exc:
        db.close()
        reason = fault_reason(exc)
        if reason is None or not existed or not whole:
            raise
        log.warning("%s: %s, so SQLite cannot open it for writing; reading it read-only", path, reason)
    db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True, check_same_thread=False,
                         isolation_level=None)
    return db, True


class RecordsDb:
    """A locked SQLite connection to ``store.sqlite``; ``created`` tells whether this open made the file."""

    def __init__(self, directory: Path) -> None:
        path = Path(directory) / RECORDS_FILE
        self.path = path
        self.created = not path.exists()
        self.lock = threading.RLock()
        try:
            self.db, self.read_only = connect_wal(path, PRAGMAS)
        except sqlite3.Error as exc:
            raise as_fault(str(path), "opening the record database", exc) or GalleryError(
                f"cannot open the store's record database {path}: {exc}") from exc
        try:
            if self.read_only:  # a full disk: nothing is created or upgraded, the version is only checked
                self._check_version()
                return
            self.db.executescript(SCHEMA)  # idempotent; executescript runs outside any transaction
            with self.transaction():
                self._check_version()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise GalleryError(f"{path} is not a readable store database: {exc}") from exc
        except BaseException:
            self.db.close()
            raise

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(RECORDS_SCHEMA_VERSION),))
        elif row[0] != str(RECORDS_SCHEMA_VERSION):
            raise GalleryError(f"{self.path}: store schema version {row[0]} is not supported (this ArgusNet reads "
                               f"version {RECORDS_SCHEMA_VERSION})")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the process lock; rolled back on any error."""
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                yield self.db
                self.db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise self._error("writing", exc) from exc
            except BaseException:
                self._rollback()
                raise

    def _error(self, what: str, exc: sqlite3.Error) -> StoreError:
        """A full disk, a read-only file system, an I/O error, a lock held too long: StoreFaultError (it passes,
        `store.faults`); anything else StoreError. Both name the file."""
        return as_fault(str(self.path), what, exc) or StoreError(f"{self.path}: {exc}")

    def _rollback(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.lock:
            try:
                return self.db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise self._error("reading", exc) from exc

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it to zero bytes (deleted rows leave no copy in it); False
        when another process's open read kept part of it."""
        with self.lock:
            try:
                busy, _, _ = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: checkpoint failed: {exc}") from exc
        return busy == 0

    def close(self) -> None:
        with self.lock:
            self.db.close()
