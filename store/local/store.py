"""The local backend (``store: {type: local, path: DIR}``): one directory on this host.

Layout::

    gallery.sqlite, index.faiss, index.json   enrolled persons and their faces (store.local.gallery)
    visitors/                                 provisional visitors, a gallery of the same layout
    negatives/                                negative evidence (faces that are NOT a person), the same layout
    crops/<camera>/<track>.jpg                the best face of each ended track
    store.sqlite                              the event log, the live tracks and the crop index

A directory written by an earlier ArgusNet (galleries of schema version 1, crops without an index, no ``negatives/``)
is upgraded in place when it is opened.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Collection

from shared.errors import GalleryError, GalleryExistsError, GalleryMissingError
from store.audit import AuditKey
from store.config import GalleryConfig, LocalStoreConfig
from store.crypto import Cipher
from store.erasures import new_salt, tombstone
from store.local.audit import FileAuditLog
from store.local.events import LocalEventLog
from store.local.gallery import DB_FILE, Gallery, rekey_gallery
from store.local.live import LocalLiveTracks
from store.local.media import LocalMediaStore
from store.local.sqlite import RECORDS_FILE, RecordsDb
from store.negatives import GalleryNegativeStore
from store.visitors import GalleryVisitorStore

log = logging.getLogger(__name__)

VISITORS_DIR = "visitors"
NEGATIVES_DIR = "negatives"
COMPANIONS = (("visitor", VISITORS_DIR), ("negative evidence", NEGATIVES_DIR))  # galleries beside the persons'


def gallery_exists(directory: Path) -> bool:
    return (Path(directory) / DB_FILE).is_file()


def _open_or_create(directory: Path, model: str, dim: int, cfg: GalleryConfig,
                    cipher: Cipher | None = None) -> Gallery:
    """A gallery created empty on first use; the loser of a race to create it opens the winner's."""
    if not gallery_exists(directory):
        try:
            return Gallery.create(directory, model, dim, cfg, cipher)
        except GalleryExistsError:
            log.info("gallery %s was created by another process at the same moment: opening it", directory)
    return Gallery.open(directory, cfg, cipher)


def _persons(directory: Path, cfg: GalleryConfig, model: str | None, dim: int | None, create: bool,
             cipher: Cipher | None) -> Gallery:
    if not gallery_exists(directory):
        if not create or model is None or dim is None:
            raise GalleryMissingError(f"no gallery at {directory} (enrol someone first: `argusnet enroll NAME PHOTO... "
                               f"--gallery {directory}`)")
        return _open_or_create(directory, model, dim, cfg, cipher)
    gallery = Gallery.open(directory, cfg, cipher)
    if model is not None and gallery.model != model:
        gallery.close()
        raise GalleryError(f"gallery {directory} holds {gallery.model} embeddings but the configured embedder is "
                           f"{model}; run `argusnet gallery reembed --gallery {directory}` or use another gallery")
    return gallery


def rekey_local(directory: Path, old: Cipher | None, new: Cipher, cfg: GalleryConfig) -> dict[str, int | None]:
    """Re-encrypt a local store from ``old`` (None: a plain store) to ``new``; stop its workers first.

    Each gallery (persons, visitors, negatives) is one SQLite transaction (faces re-sealed and the new key check
    value recorded together), then each crop file is rewritten atomically. Crash window: a crash after a gallery's
    commit leaves that gallery on the new key and the rest (the other galleries, crop files not yet rewritten) on the
    old one; the store refuses the
    old key from then on, and running the same rekey again finishes it (a gallery or crop file already on the new
    key is skipped). Returns faces re-sealed per gallery (None: already on the new key) and crops rewritten."""
    directory = Path(directory)
    if not gallery_exists(directory):
        raise GalleryMissingError(f"no gallery at {directory}: nothing to rekey")
    done: dict[str, int | None] = {}
    for label, gallery_dir in (("persons", directory), ("visitors", directory / VISITORS_DIR),
                               ("negatives", directory / NEGATIVES_DIR)):
        if gallery_exists(gallery_dir):
            done[label] = rekey_gallery(gallery_dir, old, new)
            Gallery.open(gallery_dir, cfg, new).close()  # checks the new key; rebuilds and seals the index file
    records = RecordsDb(directory)
    try:
        done["crops"] = LocalMediaStore(directory, records, new).rekey(old, new)
        LocalLiveTracks(records).clear_previews()  # previews are refreshed every second: none to re-seal
    finally:
        records.close()
    return done


def _companion(directory: Path, label: str, persons: Gallery, cfg: GalleryConfig, model: str | None,
               cipher: Cipher | None) -> Gallery:
    """A gallery beside the persons' (created on first use, also in a store made before it existed), on their
    embedder; another embedder's (a reembed that stopped half-way) is refused when ``model`` is configured."""
    gallery = _open_or_create(directory, persons.model, persons.dim, cfg, cipher)
    if model is not None and gallery.model != model:
        gallery.close()
        raise GalleryError(f"{label} gallery {directory} holds {gallery.model} embeddings but the configured "
                           f"embedder is {model}: run `argusnet gallery reembed --gallery {directory.parent}`")
    return gallery


def _open_parts(directory: Path, cfg: GalleryConfig, model: str | None, dim: int | None, create: bool,
                cipher: Cipher | None) -> tuple[list[Gallery], RecordsDb]:
    """The galleries (persons, then `COMPANIONS`) and the records database; on any failure what was opened is
    closed."""
    galleries: list[Gallery] = []
    try:
        galleries.append(_persons(directory, cfg, model, dim, create, cipher))
        for label, name in COMPANIONS:
            galleries.append(_companion(directory / name, label, galleries[0], cfg, model, cipher))
        return galleries, RecordsDb(directory)
    except BaseException:
        for gallery in reversed(galleries):
            gallery.close()
        raise


class LocalStore:
    """Persons, visitors, negative evidence, crops, events and live tracks in one directory. Use as a context
    manager."""

    def __init__(self, directory: Path, persons: Gallery, visitors: Gallery, negatives: Gallery, records: RecordsDb,
                 cipher: Cipher | None = None, audit_key: AuditKey | None = None) -> None:
        self.directory = directory
        self.persons = persons
        self.visitors = GalleryVisitorStore(visitors)
        self.negatives = GalleryNegativeStore(negatives)
        self._records = records
        self.media = LocalMediaStore(directory, records, cipher)
        self.events = LocalEventLog(records)
        self.live = LocalLiveTracks(records, cipher)
        self.audit = FileAuditLog(directory, audit_key)

    @classmethod
    def open(cls, cfg: LocalStoreConfig, gallery: GalleryConfig, model: str | None = None, dim: int | None = None,
             create: bool = False) -> "LocalStore":
        """Open the store; ``model``: refuse a gallery of another embedder; ``create``: make it when missing
        (needs ``model`` and ``dim``)."""
        directory = cfg.directory()
        cipher = Cipher.from_file(cfg.encryption_key_file)
        audit_key = AuditKey.from_file(cfg.audit_key_file, directory)
        (persons, visitors, negatives), records = _open_parts(directory, gallery, model, dim, create, cipher)
        return cls(directory, persons, visitors, negatives, records, cipher, audit_key)

    def describe(self) -> str:
        return str(self.directory)

    def finish_erasure(self, name: str) -> tuple[str, ...]:
        """Index files rewritten without the removed faces, each database's WAL truncated (rows deleted with
        ``secure_delete`` are zeroed in the database file itself); nothing here is kept per ``name``."""
        done = {DB_FILE: self.persons.checkpoint(), f"{VISITORS_DIR}/{DB_FILE}": self.visitors.gallery.checkpoint(),
                f"{NEGATIVES_DIR}/{DB_FILE}": self.negatives.gallery.checkpoint(),
                RECORDS_FILE: self._records.checkpoint()}
        return tuple(f"{self.directory / name}: another process holds the database open, so its WAL still holds "
                     "deleted pages until a checkpoint it can finish (SQLite makes one as it writes; stop the workers to be sure)" for name, ok in done.items()
                     if not ok)

    def record_erasure(self, name: str) -> None:
        with self._records.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('erasure_salt', ?)", (new_salt(),))
            salt = db.execute("SELECT value FROM meta WHERE key = 'erasure_salt'").fetchone()[0]
            db.execute("INSERT OR REPLACE INTO erasures VALUES (?, ?)", (tombstone(salt, name), time.time()))

    def erased(self, names: Collection[str]) -> dict[str, float]:
        salt = self._records.read("SELECT value FROM meta WHERE key = 'erasure_salt'")
        if not salt or not names:
            return {}
        digests = {tombstone(salt[0][0], name): name for name in set(names)}
        found = self._records.read(f"SELECT digest, at FROM erasures WHERE digest IN "
                                   f"({','.join('?' * len(digests))})", tuple(digests))
        return {digests[digest]: float(at) for digest, at in found}

    def close(self) -> None:
        self.negatives.close()
        self.visitors.close()
        self.persons.close()
        self._records.close()

    def __enter__(self) -> "LocalStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
