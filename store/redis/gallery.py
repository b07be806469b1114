"""A gallery in Redis (persons, visitors or negatives) with this process's FAISS replica of it.

Redis holds the truth (`store.redis.keys.GalleryKeys`): a hash per face (person, model, float32 embedding bytes,
JPEG crop, float32 landmarks, source, created), a set of face ids per person (the face's index entry), the
persons' created / last-seen hashes, rejections, merges and the ``meta`` hash (model, dim).

Every change is one MULTI/EXEC transaction that ends with ``COMMIT_SCRIPT``: it bumps the gallery's
``generation`` and appends an entry ``{gen, op, person, ids}`` to the ``changes`` stream, so a change and its
stream entry are written together or not at all. Writers hold the gallery's short lock (`WriteLock`) and catch
up with the stream first, so ``match_or_create`` (sync, search, mint or touch) is atomic across processes.

The replica is built from a snapshot and kept current by ``sync``: when ``generation`` moved, it reads the stream
after its cursor and applies each entry (idempotently: an add of a face it has, or whose hash is gone, is
skipped). When the entries do not follow on from the replica's generation (the stream was trimmed past the
cursor, or deleted) it rebuilds from a snapshot. A face hash that no person's set names (a write interrupted by
hand, or by a crash of an older writer) is logged and deleted when the gallery is opened; an id whose hash is gone
is logged and dropped from its set.

A merge keeps what an unmerge needs (`identity.merges.unmerge_visitor`): each of the visitor's face hashes is renamed
to ``merged_face:ID`` (blobs as they were, sealed for the same face id and gallery; no replica, repair or search
sees that key), and ``merge_undo:<hex name>`` keeps its created / last-seen times, the face ids, the person's face ids
a promote added and the live tracks the merge renamed (``merge_undo`` orders them by merge time). ``restore_merged``
renames them back under their ids with an ``add`` entry. Kept faces go with an erasure of the visitor or the person
(``erase_merges``), with the visitor retention (``expire_merges``: the undo record stays, blocked) and with a
rekey's re-encryption (`store.redis.rekey`).

Erasure (`identity.erasure`): ``erase_references`` deletes the rejections naming a name (one SREM per visitor's set,
in one MULTI/EXEC under the write lock) and the merge records into or from it (``MERGES_ERASE_SCRIPT``).
``scrub_changes`` then removes the name from the change stream in one script (``SCRUB_SCRIPT``), once the gallery
holds nothing of it (refused, returning None, while it does). A stream entry cannot be edited and XDEL only marks
an entry deleted (its bytes stay in the stream's listpack), so the script copies the stream into a new key and
renames it into place: every entry keeps its id and ``gen`` (replica cursors and the generation stay valid, nothing
is rebuilt); an entry naming the person is written as a neutral one, ``person`` empty and an ``add`` turned into a
``remove`` of the same face ids. That has the same effect on a replica that has not applied it yet: face ids are
never reused and the person's faces are all gone, so an add of them would be skipped (their hashes are gone) or
undone by the later remove anyway, and a remove needs no name. The script holds the server for one pass over the
stream (at most about ``CHANGES_MAXLEN`` entries) and briefly needs memory for a second copy of it.

A replica of more than ``gallery.hnsw_above`` faces serves searches as soon as its snapshot is read: it fills an
exact index (fast) and builds the HNSW graph in a background thread. Changes it applies meanwhile (its own adds and
removes, and those ``sync`` reads from the stream) are recorded under the replica's lock and replayed onto the new
graph before it is swapped in, under the same lock, so no face is lost or comes back. ``index_kind`` is "exact"
until the swap. A rebuild from a snapshot (or ``close``) abandons a running build between two FAISS add batches.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import redis
import simplejpeg

from shared.errors import GalleryError
from shared.names import check_person_name
from store.codec import merge_undo_from_json, merge_undo_json, undo_blocked
from store.config import GalleryConfig
from store.crypto import Cipher, seal, unseal
from store.face_index import FaceIndex, rank_persons
from store.redis.client import WriteLock, guard, redis_op
from store.redis.keys import GalleryKeys
from store.types import FaceSample, MergeUndo, PersonHit, PersonInfo, StoredFace, TrackRef, VisitorMatch

log = logging.getLogger(__name__)

CROP_JPEG_QUALITY = 95
CHANGES_MAXLEN = 100_000  # entries kept in a change stream (approximately); a replica further behind rebuilds
PAGE = 1000
CLOSE_JOIN_S = 5.0  # how long close() waits for a background HNSW build to stop (between two add batches)

COMMIT_SCRIPT = """
local gen = redis.call('INCR', KEYS[1])
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'gen', gen, 'op', ARGV[2], 'person', ARGV[3],
                      'ids', ARGV[4])
return {gen, id}
"""
CREATE_META_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
TOUCH_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local seen = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""
# Repairs on open, each re-checked inside Redis so a concurrent writer's face is never touched.
DROP_ORPHAN_SCRIPT = """
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
return redis.call('DEL', KEYS[1])
"""
DROP_DANGLING_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return redis.call('SREM', KEYS[2], ARGV[1])
"""

# Erasure (see the module docstring): merges into or from ARGV[1]; the change stream without ARGV[1].
MERGES_ERASE_SCRIPT = """
local n = redis.call('HDEL', KEYS[1], ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then n = n + redis.call('HDEL', KEYS[1], all[i]) end
end
return n
"""
SCRUB_SCRIPT = """
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
local page, start, scrubbed = tonumber(ARGV[2]), '-', 0
while true do
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', page)
  for _, entry in ipairs(entries) do
    local fields, f = entry[2], {}
    for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
    if f['person'] == ARGV[1] then
      scrubbed = scrubbed + 1
      local op = f['op']
      if op == 'add' then op = 'remove' end
      redis.call('XADD', KEYS[2], entry[1], 'gen', f['gen'], 'op', op, 'person', '', 'ids', f['ids'])
    else
      redis.call('XADD', KEYS[2], entry[1], unpack(fields))
    end
  end
  if #entries < page then break end
  start = '(' .. entries[#entries][1]
end
if scrubbed == 0 then
  redis.call('DEL', KEYS[2])
  return 0
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then redis.call('XSETID', KEYS[2], info[i + 1]) end
end
redis.call('RENAME', KEYS[2], KEYS[1])
return scrubbed
"""


def face_aad(salt: str, gallery: str, face_id: int, field: str) -> bytes:
    """A sealed face blob's associated data: the store's salt, the gallery (persons, visitors, negatives), the face
    and the field, so a blob moved onto another face, field or gallery fails to decrypt."""
    return f"face/{salt}/{gallery}/{face_id}/{field}".encode()


def encode_crop(crop: np.ndarray) -> bytes:
    return simplejpeg.encode_jpeg(np.ascontiguousarray(crop, dtype=np.uint8), quality=CROP_JPEG_QUALITY,
                                  colorspace="RGB")


def check_faces(faces: Sequence[FaceSample]) -> None:
    if not faces:
        raise ValueError("expected at least one face, got none")
    for i, face in enumerate(faces):
        if np.asarray(face.landmarks).shape != (5, 2):
            raise ValueError(f"face {i}: expected landmarks of shape (5, 2), got {np.asarray(face.landmarks).shape}")
        crop = np.asarray(face.crop)
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
            raise ValueError(f"face {i}: expected an (H, W, 3) uint8 crop, got {crop.shape} {crop.dtype}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _ids_field(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


def _parse_ids(field: bytes) -> list[int]:
    return [int(i) for i in field.split(b",") if i]


def _replay(index: FaceIndex, pending: list[tuple[str, np.ndarray, np.ndarray | None]], start: int) -> int:
    """Apply the recorded changes ``pending[start:]`` (as long as it is now) to ``index``; where it ended."""
    end = len(pending)
    for op, ids, vectors in pending[start:end]:
        if op == "add" and vectors is not None:
            index.add(ids, vectors)
        else:
            index.remove(ids)
    return end


@dataclass(frozen=True)
class Snapshot:
    """A gallery as read at generation ``gen`` (stream cursor ``cursor``): face id -> (person, embedding)."""

    gen: int
    cursor: bytes
    model: str
    dim: int
    faces: dict[int, tuple[str, np.ndarray]]


class RedisGallery:
    """One gallery; thread-safe. ``where`` names it in messages (the store's URL without password, and the
    gallery)."""

    def __init__(self, client: redis.Redis, keys: GalleryKeys, cfg: GalleryConfig, where: str,
                 cipher: Cipher | None = None, salt: str = "") -> None:
        self._r = client
        self._k = keys
        self.cfg = cfg
        self.where = where
        self._cipher = cipher  # the store checked it against its key check value
        self._salt, self._name = salt, keys.base.rsplit(":", 1)[-1]
        self._lock = threading.RLock()
        self._writer = WriteLock(client, keys.lock, where)
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._touch = client.register_script(TOUCH_SCRIPT)
        self.model = ""
        self.dim = 0
        self._owner: dict[int, str] = {}
        self._index = FaceIndex(1, cfg)
        self._gen = -1
        self._cursor = b"0-0"
        self._stop = threading.Event()
        self._epoch = 0  # bumped by every snapshot load: a build of an older one is abandoned
        self._pending: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None  # changes during a build
        self._build: threading.Thread | None = None
        with guard(where, "reading the gallery"):
            self._repair()
            self._load()

    # ----- opening -----------------------------------------------------------------------------------------
    @classmethod
    def exists(cls, client: redis.Redis, keys: GalleryKeys, where: str) -> bool:
        with guard(where, "reading the gallery's meta"):
            return bool(client.exists(keys.meta))

    @classmethod
    def create_meta(cls, client: redis.Redis, keys: GalleryKeys, model: str, dim: int, where: str) -> None:
        """Write the meta of a new empty gallery unless another process just did (then it is left as it is)."""
        with guard(where, "creating the gallery"):
            made = client.eval(CREATE_META_SCRIPT, 1, keys.meta, "model", model, "dim", str(dim), "created",
                               repr(time.time()))
        if not made:
            log.info("gallery %s was created by another process at the same moment: opening it", where)

    def close(self) -> None:
        """The connection belongs to the store; the replica is dropped (a running HNSW build stops between two add
        batches: waited for up to ``CLOSE_JOIN_S``, then left to end on its own, a daemon thread)."""
        self._stop.set()
        build = self._build
        if build is not None:
            build.join(CLOSE_JOIN_S)
            if build.is_alive():
                log.info("%s: the background HNSW build is inside a FAISS add: not waiting for it", self.where)
        with self._lock:
            self._owner = {}
            self._pending = None

    # ----- encryption at rest (store.crypto) ----------------------------------------------------------------
    def _aad(self, face_id: int, field: str) -> bytes:
        return face_aad(self._salt, self._name, face_id, field)

    def _seal(self, data: bytes, face_id: int, field: str) -> bytes:
        return seal(self._cipher, data, self._aad(face_id, field))

    def _unseal(self, blob: bytes, face_id: int, field: str) -> bytes:
        return unseal(self._cipher, blob, self._aad(face_id, field), f"{self.where}: face {face_id} {field}")

    # ----- snapshot and change stream ----------------------------------------------------------------------
    def _read_meta(self) -> tuple[int, bytes, str, int, list[str]]:
        pipe = self._r.pipeline(transaction=True)
        pipe.get(self._k.generation)
        pipe.xrevrange(self._k.changes, count=1)
        pipe.hgetall(self._k.meta)
        pipe.hkeys(self._k.created)
        gen, last, meta, names = pipe.execute()
        if b"model" not in meta or b"dim" not in meta:
            raise GalleryError(f"{self.where}: the gallery's meta ({self._k.meta}) is missing or incomplete")
        cursor = last[0][0] if last else b"0-0"
        return int(gen or 0), cursor, _text(meta[b"model"]), int(meta[b"dim"]), [_text(n) for n in names]

    def _face_ids(self, names: list[str]) -> dict[int, str]:
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.smembers(self._k.faces_of(name))
        return {int(face_id): name for name, ids in zip(names, pipe.execute()) for face_id in ids}

    def _embeddings(self, ids: Sequence[int]) -> dict[int, bytes]:
        """Embedding bytes (decrypted) of the faces whose hash exists."""
        out: dict[int, bytes] = {}
        for start in range(0, len(ids), PAGE):
            chunk = ids[start:start + PAGE]
            pipe = self._r.pipeline(transaction=False)
            for face_id in chunk:
                pipe.hget(self._k.face(face_id), "embedding")
            out.update((i, self._unseal(blob, i, "embedding")) for i, blob in zip(chunk, pipe.execute())
                       if blob is not None)
        return out

    def _stored_ids(self, ids: Sequence[int]) -> set[int]:
        """The faces among ``ids`` whose hash holds an embedding (nothing decrypted)."""
        out: set[int] = set()
        for start in range(0, len(ids), PAGE):
            chunk = ids[start:start + PAGE]
            pipe = self._r.pipeline(transaction=False)
            for face_id in chunk:
                pipe.hexists(self._k.face(face_id), "embedding")
            out.update(i for i, there in zip(chunk, pipe.execute()) if there)
        return out

    def _snapshot(self) -> Snapshot:
        gen, cursor, model, dim, names = self._read_meta()
        owners = self._face_ids(names)
        faces: dict[int, tuple[str, np.ndarray]] = {}
        for face_id, blob in self._embeddings(sorted(owners)).items():
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape != (dim,):
                log.warning("%s: face %d has a %d-float embedding, the gallery holds %d: not searched", self.where,
                            face_id, vector.size, dim)
                continue
            faces[face_id] = (owners[face_id], vector)
        return Snapshot(gen, cursor, model, dim, faces)

    def _load(self) -> None:
        """Under the lock: the replica from a snapshot, exact at first; HNSW built in the background when large."""
        snap = self._snapshot()
        ids = np.fromiter(snap.faces, np.int64, len(snap.faces))
        vectors = (np.stack([vector for _, vector in snap.faces.values()]) if snap.faces
                   else np.empty((0, snap.dim), np.float32))
        background = len(ids) > self.cfg.hnsw_above
        index = FaceIndex(snap.dim, self.cfg, grow=not background)
        if len(ids):
            index.add(ids, vectors)
        self.model, self.dim, self._index = snap.model, snap.dim, index
        self._owner = {face_id: name for face_id, (name, _) in snap.faces.items()}
        self._gen, self._cursor = snap.gen, snap.cursor
        self._epoch += 1
        self._pending = [] if background else None
        if background and not self._stop.is_set():
            self._build = threading.Thread(target=self._build_hnsw, args=(self._epoch, ids, vectors, self._pending),
                                           name=f"hnsw-build {self.where}", daemon=True)
            self._build.start()

    # ----- background HNSW build ---------------------------------------------------------------------------
    def _build_hnsw(self, epoch: int, ids: np.ndarray, vectors: np.ndarray,
                    pending: list[tuple[str, np.ndarray, np.ndarray | None]]) -> None:
        """The build thread: the graph of the snapshot, then the changes recorded meanwhile, then the swap."""
        t0 = time.monotonic()
        try:
            built = FaceIndex.hnsw_built(ids, vectors, self.cfg, lambda: self._stop.is_set() or self._epoch != epoch)
            if built is None:
                return
            done = _replay(built, pending, 0)  # catch up without the lock: only the last changes wait for it
            with self._lock:
                if self._stop.is_set() or self._epoch != epoch:
                    return
                _replay(built, pending, done)
                self._index, self._pending = built, None
        except Exception:
            with self._lock:
                if self._epoch == epoch:
                    self._pending = None
            log.exception("%s: building the HNSW index failed: searches stay exact", self.where)
            raise
        log.info("%s: HNSW index of %d faces built in the background in %.1f s (%d changes replayed)", self.where,
                 len(ids), time.monotonic() - t0, len(pending))

    def _repair(self) -> None:
        """On open: drop face hashes no person's set names, and set entries whose hash is gone (both logged)."""
        names = [_text(n) for n in self._r.hkeys(self._k.created)]
        owners = self._face_ids(names)
        drop_orphan = self._r.register_script(DROP_ORPHAN_SCRIPT)
        for key in self._r.scan_iter(match=self._k.face_pattern, count=PAGE):
            suffix = key.rsplit(b":", 1)[-1]
            if not suffix.isdigit() or int(suffix) in owners:
                continue
            person = self._r.hget(key, "person")
            members_key = self._k.faces_of(_text(person)) if person is not None else self._k.faces_of("")
            if drop_orphan(keys=[key, members_key], args=[suffix]):
                log.warning("%s: face %s was written without its index entry (an interrupted write): deleted",
                            self.where, _text(suffix))
        have = self._stored_ids(sorted(owners))
        drop_dangling = self._r.register_script(DROP_DANGLING_SCRIPT)
        for face_id in sorted(set(owners) - set(have)):
            if drop_dangling(keys=[self._k.face(face_id), self._k.faces_of(owners[face_id])], args=[face_id]):
                log.warning("%s: person %r listed face %d, which is not stored: dropped from the list", self.where,
                            owners[face_id], face_id)

    def _sync_locked(self) -> bool:
        """Apply the change-stream entries after this replica's cursor; rebuild when they do not follow on."""
        if int(self._r.get(self._k.generation) or 0) == self._gen:
            return False
        while True:
            entries = self._r.xrange(self._k.changes, min=b"(" + self._cursor, max="+", count=PAGE)
            for entry_id, fields in entries:
                gen = int(fields[b"gen"])
                if gen <= self._gen:  # already applied (not expected: the cursor moves with the generation)
                    self._cursor = entry_id
                    continue
                if gen != self._gen + 1 or fields[b"op"] == b"replace":
                    log.info("%s: replica at generation %d, the stream continues at %d (%s): rebuilding", self.where,
                             self._gen, gen, _text(fields[b"op"]))
                    self._load()
                    return True
                self._apply(fields)
                self._gen, self._cursor = gen, entry_id
            if len(entries) < PAGE:
                break
        if int(self._r.get(self._k.generation) or 0) > self._gen:  # entries trimmed away or the stream deleted
            log.info("%s: change stream entries after generation %d are gone: rebuilding", self.where, self._gen)
            self._load()
        return True

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        ids = _parse_ids(fields[b"ids"])
        if fields[b"op"] == b"add":
            fresh = [i for i in ids if i not in self._owner]
            found = self._embeddings(fresh)
            if found:
                person = _text(fields[b"person"])
                self._add_local(person, list(found), [np.frombuffer(b, np.float32) for b in found.values()])
        else:
            self._remove_local([i for i in ids if i in self._owner])

    def _add_local(self, person: str, ids: list[int], vectors: list[np.ndarray]) -> None:
        id_array, stacked = np.asarray(ids, np.int64), np.stack(vectors)
        self._index.add(id_array, stacked)
        if self._pending is not None:
            self._pending.append(("add", id_array, stacked))
        self._owner.update((i, person) for i in ids)

    def _remove_local(self, ids: list[int]) -> None:
        if ids:
            id_array = np.asarray(ids, np.int64)
            self._index.remove(id_array)
            if self._pending is not None:
                self._pending.append(("remove", id_array, None))
        for face_id in ids:
            self._owner.pop(face_id, None)

    def _committed(self, reply: list) -> None:
        """After this process's change: its own entry moves the cursor when it follows on (else sync will)."""
        gen, entry_id = int(reply[0]), reply[1]
        if gen == self._gen + 1:
            self._gen, self._cursor = gen, entry_id

    @redis_op("syncing the gallery")
    def sync(self) -> bool:
        """Pick up changes other processes made; True when there were any."""
        with self._lock:
            return self._sync_locked()

    # ----- changes -----------------------------------------------------------------------------------------
    def _check_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"embeddings: expected shape (N, {self.dim}), got {embeddings.shape}")
        if not np.all(np.isfinite(embeddings)):
            raise ValueError("embeddings: contain NaN or infinity")
        return embeddings

    def _check_samples(self, faces: Sequence[FaceSample]) -> np.ndarray:
        check_faces(faces)
        return self._check_embeddings(np.stack([np.asarray(f.embedding, np.float32) for f in faces]))

    def _exists(self, name: str) -> bool:
        return bool(self._r.hexists(self._k.created, name))

    def _unknown(self, name: str) -> GalleryError:
        return GalleryError(f"no person named {name!r} in gallery {self.where}")

    @redis_op("adding a person")
    def add_person(self, name: str, faces: Sequence[FaceSample]) -> list[int]:
        """Add faces to ``name`` (created if new), all or nothing; the new face ids."""
        name = check_person_name(name)  # the last line of defence: no event or worker batch could carry a bad name
        embeddings = self._check_samples(faces)
        with self._lock, self._writer.hold():
            self._sync_locked()
            return self._insert(name, faces, embeddings, time.time())

    def _insert(self, name: str, faces: Sequence[FaceSample], embeddings: np.ndarray, now: float) -> list[int]:
        """Under the write lock: the person (created if new) and their faces in one transaction, then the replica."""
        last = int(self._r.incrby(self._k.face_seq, len(faces)))
        ids = list(range(last - len(faces) + 1, last + 1))
        pipe = self._r.pipeline(transaction=True)
        pipe.hsetnx(self._k.created, name, repr(now))
        pipe.hset(self._k.seen, name, repr(now))
        for face_id, face, vector in zip(ids, faces, embeddings):
            pipe.hset(self._k.face(face_id), mapping={
                "person": name, "model": self.model, "embedding": self._seal(vector.tobytes(), face_id, "embedding"),
                "crop": self._seal(encode_crop(face.crop), face_id, "crop"),
                "landmarks": np.asarray(face.landmarks, np.float32).tobytes(), "source": str(face.source),
                "created": repr(now)})
        pipe.sadd(self._k.faces_of(name), *ids)
        self._commit(keys=[self._k.generation, self._k.changes], args=[CHANGES_MAXLEN, "add", name, _ids_field(ids)],
                     client=pipe)
        reply = pipe.execute()[-1]
        self._add_local(name, ids, list(embeddings))
        self._committed(reply)
        return ids

    @redis_op("removing a person")
    def remove_person(self, name: str, missing_ok: bool = False) -> int:
        """Remove a person and all their faces; how many faces went (``missing_ok``: 0 for an unknown person)."""
        with self._lock, self._writer.hold():
            self._sync_locked()
            if not self._exists(name):
                if missing_ok:
                    return 0
                raise self._unknown(name)
            return self._delete(name, merged_into=None)

    def _delete(self, name: str, merged_into: str | None) -> int:
        """Under the write lock: a person's faces, sets and hashes in one transaction (recording a merge)."""
        ids = sorted(int(i) for i in self._r.smembers(self._k.faces_of(name)))
        pipe = self._r.pipeline(transaction=True)
        if ids:
            pipe.delete(*[self._k.face(i) for i in ids])
        pipe.delete(self._k.faces_of(name), self._k.rejected(name))
        pipe.hdel(self._k.created, name)
        pipe.hdel(self._k.seen, name)
        if merged_into is not None:
            pipe.hset(self._k.merges, name, merged_into)
        op = "remove" if merged_into is None else "merge"
        self._commit(keys=[self._k.generation, self._k.changes], args=[CHANGES_MAXLEN, op, name, _ids_field(ids)],
                     client=pipe)
        reply = pipe.execute()[-1]
        self._remove_local([i for i in ids if i in self._owner])
        self._committed(reply)
        return len(ids)

    @redis_op("removing a face")
    def remove_face(self, name: str, face_id: int) -> bool:
        """Remove one face of ``name`` (the person goes with their last face) in one transaction under the write
        lock; False, nothing changed, when ``name`` has no face ``face_id``."""
        face_id = int(face_id)
        with self._lock, self._writer.hold():
            self._sync_locked()
            members = self._k.faces_of(name)
            if not self._r.sismember(members, face_id):
                return False
            last = int(self._r.scard(members)) == 1  # writers hold the lock: the count cannot change meanwhile
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(self._k.face(face_id))
            pipe.srem(members, face_id)
            if last:
                pipe.delete(self._k.rejected(name))
                pipe.hdel(self._k.created, name)
                pipe.hdel(self._k.seen, name)
            self._commit(keys=[self._k.generation, self._k.changes],
                         args=[CHANGES_MAXLEN, "remove", name, _ids_field([face_id])], client=pipe)
            reply = pipe.execute()[-1]
            self._remove_local([face_id] if face_id in self._owner else [])
            self._committed(reply)
            return True

    @redis_op("merging")
    def record_merge(self, name: str, into: str, person_faces: Sequence[int] = (),
                     live_tracks: Sequence[TrackRef] = ()) -> int:
        """``name`` is ``into`` from now on: its faces leave the index, kept aside with what an unmerge needs
        (``_set_aside``), and the merge is recorded; how many faces went."""
        with self._lock, self._writer.hold():
            self._sync_locked()
            if not self._exists(name):  # gone already (merged, expired): only the merge is recorded
                return self._delete(name, merged_into=into)
            return self._set_aside(name, into, merge_undo_json(person_faces, live_tracks))

    def _set_aside(self, name: str, into: str, undo: str) -> int:
        """Under the write lock, one transaction: each face hash renamed to its ``merged_face`` key (the sealed blobs
        as they were), the undo record (created / last-seen times, ``undo``, the face ids), the merge and a ``merge``
        entry (replicas drop the faces)."""
        ids = sorted(self._stored_ids(sorted(int(i) for i in self._r.smembers(self._k.faces_of(name)))))
        created, seen = self._r.hget(self._k.created, name), self._r.hget(self._k.seen, name)
        now = time.time()
        pipe = self._r.pipeline(transaction=True)
        for face_id in ids:
            pipe.rename(self._k.face(face_id), self._k.merged_face(face_id))
        pipe.delete(self._k.faces_of(name), self._k.rejected(name))
        pipe.hdel(self._k.created, name)
        pipe.hdel(self._k.seen, name)
        pipe.hset(self._k.merges, name, into)
        pipe.delete(self._k.merge_undo(name))
        pipe.hset(self._k.merge_undo(name), mapping={
            "into": into, "merged_at": repr(now), "created": created, "last_seen": seen or created, "undo": undo,
            "faces": _ids_field(ids)})
        pipe.zadd(self._k.merge_undos, {name: now})
        self._commit(keys=[self._k.generation, self._k.changes], args=[CHANGES_MAXLEN, "merge", name, _ids_field(ids)],
                     client=pipe)
        reply = pipe.execute()[-1]
        self._remove_local([i for i in ids if i in self._owner])
        self._committed(reply)
        return len(ids)

    @redis_op("reading a merge's undo record")
    def merge_undo(self, name: str) -> MergeUndo | None:
        """What the merge of ``name`` kept (None: nothing); ``blocked`` says why it cannot be undone."""
        row = self._r.hgetall(self._k.merge_undo(name))
        if not row:
            return None
        ids = _parse_ids(row[b"faces"])
        expired = float(row[b"faces_expired"]) if b"faces_expired" in row else None
        pipe = self._r.pipeline(transaction=False)
        for face_id in ids:
            pipe.hget(self._k.merged_face(face_id), "model")
        models = {_text(m) for m in pipe.execute() if m is not None} if ids else set()
        blocked = undo_blocked(name, expired, models, self.model, self._exists(name))
        return merge_undo_from_json(_text(row[b"undo"]), name, _text(row[b"into"]), float(row[b"merged_at"]),
                                    0 if expired is not None else len(ids), blocked)

    @redis_op("unmerging")
    def restore_merged(self, name: str) -> int:
        """Undo ``record_merge`` in one transaction: the kept face hashes renamed back under ``name`` (same ids),
        its created / last-seen times, the merge and its undo record gone, an ``add`` entry; how many faces."""
        with self._lock, self._writer.hold():
            self._sync_locked()
            undo = self.merge_undo(name)
            if undo is None:
                raise GalleryError(f"{name} was never merged in gallery {self.where}, or its merge kept nothing to "
                                   "undo")
            if undo.blocked is not None:
                raise GalleryError(f"the merge of {name} into {undo.person} can no longer be undone: {undo.blocked}")
            row = self._r.hgetall(self._k.merge_undo(name))
            ids = sorted(self._kept_embeddings(_parse_ids(row[b"faces"])).items())
            pipe = self._r.pipeline(transaction=True)
            for face_id, _ in ids:
                pipe.rename(self._k.merged_face(face_id), self._k.face(face_id))
            if ids:
                pipe.sadd(self._k.faces_of(name), *[i for i, _ in ids])
            pipe.hset(self._k.created, name, row[b"created"])
            pipe.hset(self._k.seen, name, row[b"last_seen"])
            pipe.hdel(self._k.merges, name)
            pipe.delete(self._k.merge_undo(name))
            pipe.zrem(self._k.merge_undos, name)
            self._commit(keys=[self._k.generation, self._k.changes],
                         args=[CHANGES_MAXLEN, "add", name, _ids_field([i for i, _ in ids])], client=pipe)
            reply = pipe.execute()[-1]
            if ids:
                self._add_local(name, [i for i, _ in ids], [np.frombuffer(b, np.float32) for _, b in ids])
            self._committed(reply)
            return len(ids)

    def _kept_embeddings(self, ids: Sequence[int]) -> dict[int, bytes]:
        """Embedding bytes (decrypted) of the kept faces among ``ids`` whose hash exists."""
        pipe = self._r.pipeline(transaction=False)
        for face_id in ids:
            pipe.hget(self._k.merged_face(face_id), "embedding")
        return {i: self._unseal(blob, i, "embedding") for i, blob in zip(ids, pipe.execute()) if blob is not None}

    @redis_op("expiring kept faces")
    def expire_merges(self, older_than: float) -> int:
        """Delete the faces kept by merges made before ``older_than`` (unix s); the undo record stays, blocked."""
        with self._lock, self._writer.hold():
            names = [_text(n) for n in self._r.zrangebyscore(self._k.merge_undos, "-inf", f"({older_than!r}")]
            return sum(self._drop_kept(name, keep_record=True) for name in names)

    @redis_op("erasing kept faces")
    def erase_merges(self, name: str) -> int:
        """Delete what the merges into or from ``name`` kept (faces and undo records); how many faces."""
        with self._lock, self._writer.hold():
            names = [_text(n) for n in self._r.zrange(self._k.merge_undos, 0, -1)]
            pipe = self._r.pipeline(transaction=False)
            for merged in names:
                pipe.hget(self._k.merge_undo(merged), "into")
            doomed = [m for m, into in zip(names, pipe.execute()) if m == name or (into and _text(into) == name)]
            return sum(self._drop_kept(merged, keep_record=False) for merged in doomed)

    def _drop_kept(self, name: str, keep_record: bool) -> int:
        """Under the write lock: the kept faces of ``name`` deleted, and its undo record marked expired (or
        deleted), in one transaction; how many faces."""
        ids = _parse_ids(self._r.hget(self._k.merge_undo(name), "faces") or b"")
        pipe = self._r.pipeline(transaction=True)
        if ids:
            pipe.delete(*[self._k.merged_face(i) for i in ids])
        if keep_record:
            pipe.hset(self._k.merge_undo(name), "faces_expired", repr(time.time()))
            pipe.zadd(self._k.merge_undos, {name: float("inf")})
        else:
            pipe.delete(self._k.merge_undo(name))
            pipe.zrem(self._k.merge_undos, name)
        replies = pipe.execute()
        return int(replies[0]) if ids else 0

    @redis_op("removing faces")
    def remove_faces(self, name: str, face_ids: Sequence[int]) -> int:
        """Remove those of ``face_ids`` that are faces of ``name``, and ``name`` when no face is left; how many."""
        with self._lock, self._writer.hold():
            self._sync_locked()
            members = {int(i) for i in self._r.smembers(self._k.faces_of(name))}
            ids = sorted({int(i) for i in face_ids} & members)
            if not ids:
                return 0
            pipe = self._r.pipeline(transaction=True)
            pipe.delete(*[self._k.face(i) for i in ids])
            pipe.srem(self._k.faces_of(name), *ids)
            if len(ids) == len(members):
                pipe.delete(self._k.rejected(name))
                pipe.hdel(self._k.created, name)
                pipe.hdel(self._k.seen, name)
            self._commit(keys=[self._k.generation, self._k.changes],
                         args=[CHANGES_MAXLEN, "remove", name, _ids_field(ids)], client=pipe)
            reply = pipe.execute()[-1]
            self._remove_local([i for i in ids if i in self._owner])
            self._committed(reply)
            return len(ids)

    @redis_op("reading a merge")
    def merged_into(self, name: str) -> str | None:
        value = self._r.hget(self._k.merges, name)
        return None if value is None else _text(value)

    @redis_op("replacing embeddings")
    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        """Switch the gallery to ``model``: every face gets a new embedding, in one transaction."""
        vectors = {i: np.ascontiguousarray(v, dtype=np.float32) for i, v in embeddings.items()}
        for face_id, vector in vectors.items():
            if vector.shape != (dim,):
                raise ValueError(f"embedding of face {face_id}: expected shape ({dim},), got {vector.shape}")
        with self._lock, self._writer.hold():
            self._sync_locked()
            if set(vectors) != set(self._owner):
                raise GalleryError(f"reembed must cover every face: got {len(vectors)} of {len(self._owner)}")
            pipe = self._r.pipeline(transaction=True)
            for face_id, vector in vectors.items():
                pipe.hset(self._k.face(face_id), mapping={"embedding": self._seal(vector.tobytes(), face_id,
                                                                                  "embedding"), "model": model})
            pipe.hset(self._k.meta, mapping={"model": model, "dim": str(dim)})
            self._commit(keys=[self._k.generation, self._k.changes], args=[CHANGES_MAXLEN, "replace", "", ""],
                         client=pipe)
            pipe.execute()
            self._load()

    def _best_match(self, embeddings: np.ndarray, threshold: float) -> VisitorMatch | None:
        best: VisitorMatch | None = None
        if not self._owner:
            return None
        for hits in self._search_locked(embeddings, 4):
            if hits and hits[0].similarity >= threshold and (best is None or hits[0].similarity > best.similarity):
                best = VisitorMatch(hits[0].name, hits[0].similarity, False)
        return best

    @redis_op("matching or creating a visitor")
    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, prefix: str,
                        max_faces: int) -> VisitorMatch:
        """Under the gallery's lock (every process): catch up, search, then mark the best match seen or mint
        ``prefix-N`` (N from INCR) with the first ``max_faces`` faces."""
        embeddings = self._check_samples(faces)
        now = time.time()
        with self._lock, self._writer.hold():
            self._sync_locked()
            match = self._best_match(embeddings, threshold)
            if match is not None:
                self._touch(keys=[self._k.created, self._k.seen], args=[match.visitor, repr(now)])
                return match
            name = f"{prefix}-{int(self._r.incr(self._k.counter(prefix)))}"
            self._insert(name, faces[:max_faces], embeddings[:max_faces], now)
            return VisitorMatch(name, None, True)

    @redis_op("marking a visitor seen")
    def seen(self, name: str, faces: Sequence[FaceSample], max_faces: int, when: float) -> None:
        """Mark seen and add faces up to ``max_faces``; a person gone meanwhile is left alone."""
        embeddings = self._check_samples(faces) if faces else None
        with self._lock, self._writer.hold():
            self._sync_locked()
            if not self._touch(keys=[self._k.created, self._k.seen], args=[name, repr(when)]):
                return
            room = max_faces - int(self._r.scard(self._k.faces_of(name)))
            if room > 0 and embeddings is not None:
                self._insert(name, faces[:room], embeddings[:room], time.time())

    @redis_op("recording a rejection")
    def reject(self, name: str, not_name: str) -> None:
        with self._lock, self._writer.hold():
            if not self._exists(name):
                raise self._unknown(name)
            self._r.sadd(self._k.rejected(name), not_name)

    @redis_op("reading rejections")
    def rejections(self) -> dict[str, frozenset[str]]:
        names = [_text(n) for n in self._r.hkeys(self._k.created)]
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.smembers(self._k.rejected(name))
        return {name: frozenset(_text(v) for v in values) for name, values in zip(names, pipe.execute()) if values}

    @redis_op("deleting a rejection")
    def remove_rejection(self, name: str, not_name: str) -> bool:
        """Forget that ``name`` is not ``not_name``; whether it was recorded."""
        with self._lock, self._writer.hold():
            return bool(self._r.srem(self._k.rejected(name), not_name))

    # ----- erasure -----------------------------------------------------------------------------------------
    @redis_op("listing merges")
    def merges_into(self, into: str) -> list[str]:
        """The names merged into ``into``, sorted."""
        return sorted(_text(n) for n, v in self._r.hgetall(self._k.merges).items() if _text(v) == into)

    @redis_op("erasing references")
    def erase_references(self, name: str) -> tuple[int, int]:
        """Delete the rejections naming ``name`` and the merges into or from it; (rejections, merges) deleted."""
        with self._lock, self._writer.hold():
            names = [_text(n) for n in self._r.hkeys(self._k.created)]
            pipe = self._r.pipeline(transaction=True)
            for visitor in names:
                pipe.srem(self._k.rejected(visitor), name)
            pipe.eval(MERGES_ERASE_SCRIPT, 1, self._k.merges, name)
            *removed, merges = pipe.execute()
            return sum(int(n) for n in removed), int(merges)

    @redis_op("scrubbing the change stream")
    def scrub_changes(self, name: str) -> int | None:
        """Rewrite the change stream without ``name`` (module docstring); how many entries named it, or None when
        the gallery still holds ``name`` (nothing rewritten)."""
        keys = [self._k.changes, self._k.changes_rewrite, self._k.created, self._k.faces_of(name)]
        scrubbed = int(self._r.eval(SCRUB_SCRIPT, len(keys), *keys, name, PAGE))
        return None if scrubbed < 0 else scrubbed

    def expire(self, older_than: float) -> list[str]:
        """Remove every person not seen since ``older_than`` (unix s); their names."""
        gone = [p.name for p in self.persons() if p.last_seen < older_than]
        for name in gone:  # several workers expire the same visitors: whoever is first removes
            self.remove_person(name, missing_ok=True)
        return gone

    # ----- queries -----------------------------------------------------------------------------------------
    @property
    def face_count(self) -> int:
        return len(self._owner)

    @property
    def index_kind(self) -> str:
        return self._index.kind

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """For each query, persons ranked by their best face's cosine similarity (each person once)."""
        embeddings = self._check_embeddings(embeddings)
        with self._lock:
            return self._search_locked(embeddings, k)

    def _search_locked(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        return rank_persons(self._index.search(embeddings, k), self._owner)

    @redis_op("listing persons")
    def persons(self) -> list[PersonInfo]:
        pipe = self._r.pipeline(transaction=True)
        pipe.hgetall(self._k.created)
        pipe.hgetall(self._k.seen)
        created, seen = pipe.execute()
        names = sorted(_text(n) for n in created)
        pipe = self._r.pipeline(transaction=False)
        for name in names:
            pipe.scard(self._k.faces_of(name))
        counts = pipe.execute()
        return [PersonInfo(name, int(count), float(created[name.encode()]),
                           float(seen.get(name.encode(), created[name.encode()])))
                for name, count in zip(names, counts)]

    def _stored_faces(self, owners: dict[int, str]) -> list[StoredFace]:
        ids = sorted(owners)
        pipe = self._r.pipeline(transaction=False)
        for face_id in ids:
            pipe.hgetall(self._k.face(face_id))
        out = []
        for face_id, row in zip(ids, pipe.execute()):
            if not row:  # removed since the ids were read
                continue
            crop = simplejpeg.decode_jpeg(self._unseal(row[b"crop"], face_id, "crop"), colorspace="RGB")
            embedding = np.frombuffer(self._unseal(row[b"embedding"], face_id, "embedding"), np.float32).copy()
            out.append(StoredFace(face_id, owners[face_id], crop,
                                  np.frombuffer(row[b"landmarks"], np.float32).reshape(5, 2).copy(), embedding,
                                  _text(row[b"source"]), float(row[b"created"])))
        return out

    @redis_op("reading faces")
    def all_faces(self) -> list[StoredFace]:
        return self._stored_faces(self._face_ids([_text(n) for n in self._r.hkeys(self._k.created)]))

    @redis_op("reading faces")
    def faces_of(self, name: str, missing_ok: bool = False) -> list[StoredFace]:
        """Every stored face of one person (GalleryError when unknown; ``missing_ok``: [] then)."""
        faces = self._stored_faces(self._face_ids([name]))
        if not faces and not missing_ok:
            raise self._unknown(name)
        return faces
