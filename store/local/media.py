"""The local media store: track crops as JPEG files ``crops/<camera>/<track>.jpg`` in the store directory, indexed
with their time and size in ``store.sqlite`` (so retention and disk budgets never walk the folder)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import simplejpeg

from shared.errors import GalleryError, StoreError
from shared.files import atomic_write
from shared.ids import ID_RULE, is_valid_id
from store.crypto import Cipher, seal, unseal
from store.faults import as_fault
from store.local.sqlite import RecordsDb

log = logging.getLogger(__name__)

CROPS_DIR = "crops"
CROP_JPEG_QUALITY = 90


def crop_key(camera: str, track: int) -> str:
    if not is_valid_id(camera):  # the id names a folder: never '..' or a path (the protocol checks it too)
        raise ValueError(f"camera id must be {ID_RULE}, got {camera!r}")
    if not isinstance(track, int) or track < 0:
        raise ValueError(f"track id must be an int >= 0, got {track!r}")
    return f"{camera}/{track}"


def crop_aad(key: str) -> bytes:
    """What an encrypted crop's associated data names: its key (a crop file moved onto another fails)."""
    return f"crop/{key}".encode()


def _sealed_with(cipher: Cipher, blob: bytes, aad: bytes) -> bool:
    try:
        cipher.decrypt(blob, aad, "probe")
    except GalleryError:
        return False
    return True


def _parse_key(key: str) -> tuple[str, int]:
    camera, sep, track = key.partition("/")
    if not sep or not track.isdigit() or not is_valid_id(camera):
        raise KeyError(f"not a crop key (camera/track): {key!r}")
    return camera, int(track)


class LocalMediaStore:
    def __init__(self, directory: Path, records: RecordsDb, cipher: Cipher | None = None) -> None:
        self.root = Path(directory) / CROPS_DIR
        self._records = records
        self._cipher = cipher  # the galleries checked it against the store's key check value
        if records.created:
            self._index_existing_files()

    def _path(self, key: str) -> Path:
        camera, track = _parse_key(key)
        return self.root / camera / f"{track}.jpg"

    def _index_existing_files(self) -> None:
        """Upgrade of a store written before the crop index: index the crop files already there, by mtime."""
        rows = []
        for path in self.root.glob("*/*.jpg"):
            if is_valid_id(path.parent.name) and path.stem.isdigit():
                stat = path.stat()
                rows.append((f"{path.parent.name}/{path.stem}", stat.st_mtime, stat.st_size))
        if rows:
            with self._records.transaction() as db:
                db.executemany("INSERT OR IGNORE INTO media VALUES (?, ?, ?)", rows)
            log.info("indexed %d crop file(s) already in %s", len(rows), self.root)

    def put_crop(self, camera: str, track: int, crop: np.ndarray, when: float | None = None) -> str:
        key = crop_key(camera, track)
        data = seal(self._cipher, simplejpeg.encode_jpeg(np.ascontiguousarray(crop, dtype=np.uint8),
                                                         quality=CROP_JPEG_QUALITY, colorspace="RGB"), crop_aad(key))
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)
        except OSError as exc:  # a full or read-only disk passes (StoreFaultError); anything else is a StoreError
            raise as_fault(str(self.root), "writing a crop", exc) or StoreError(f"cannot write crop {path}: {exc}") \
                from exc
        with self._records.transaction() as db:
            db.execute("INSERT OR REPLACE INTO media VALUES (?, ?, ?)",
                       (key, time.time() if when is None else when, len(data)))
        return key

    def get_crop(self, key: str) -> bytes:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"no crop {key!r}") from None
        return unseal(self._cipher, data, crop_aad(key), str(path))

    def remove(self, key: str) -> bool:
        path = self._path(key)
        existed = path.exists()
        path.unlink(missing_ok=True)
        with self._records.transaction() as db:
            db.execute("DELETE FROM media WHERE key = ?", (key,))
        return existed

    def expire(self, older_than: float) -> int:
        keys = [k for (k,) in self._records.read("SELECT key FROM media WHERE created < ?", (older_than,))]
        for key in keys:  # another worker sharing this store may remove the same files: missing is fine
            self._path(key).unlink(missing_ok=True)
        with self._records.transaction() as db:
            db.executemany("DELETE FROM media WHERE key = ?", [(k,) for k in keys])
        return len(keys)

    def total_bytes(self) -> int:
        return int(self._records.read("SELECT COALESCE(SUM(bytes), 0) FROM media")[0][0])

    def trim_to(self, max_bytes: int) -> int:
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        excess = self.total_bytes() - max_bytes
        if excess <= 0:
            return 0
        doomed: list[str] = []
        for key, size in self._records.read("SELECT key, bytes FROM media ORDER BY created, key"):
            if excess <= 0:
                break
            doomed.append(key)
            excess -= int(size)
        for key in doomed:  # another worker trimming at once may remove the same files: missing is fine
            self._path(key).unlink(missing_ok=True)
        with self._records.transaction() as db:
            db.executemany("DELETE FROM media WHERE key = ?", [(k,) for k in doomed])
        return len(doomed)

    def rekey(self, old: Cipher | None, new: Cipher) -> int:
        """Re-encrypt every indexed crop file from ``old`` (None: plain) to ``new``, each rewritten atomically; a
        file already sealed with ``new`` (a rekey that stopped part-way) is left as it is. How many rewritten."""
        rewritten = 0
        for (key,) in self._records.read("SELECT key FROM media"):
            path = self._path(key)
            try:
                blob = path.read_bytes()
            except FileNotFoundError:  # retention removed it meanwhile
                continue
            if _sealed_with(new, blob, crop_aad(key)):  # a rekey that stopped part-way did this one
                continue
            plain = unseal(old, blob, crop_aad(key), str(path))
            atomic_write(path, new.encrypt(plain, crop_aad(key)), durable=True)
            rewritten += 1
        return rewritten

    def close(self) -> None:
        """The record database is closed by the store that owns it."""
