"""The store interface: what every backend (local, Redis) provides, as Protocols.

A ``Store`` bundles seven parts: ``persons`` (the enrolled gallery), ``visitors`` (provisional identities of people
nobody enrolled), ``negatives`` (negative evidence: faces an operator said are NOT a person, kept under that person's
name, `store.negatives`), ``media`` (track crops), ``events`` (the event history), ``live`` (the tracks alive now)
and ``audit`` (the tamper-evident log of changes to identities and users, `store.audit.AuditTrail`).
Identity operations that span parts (an operator naming a visitor, a visitor merged into the person a track was
later named as) are written once over these Protocols in `identity.merges`; retention in `store.retention`.
Every backend passes the contract suite in ``tests/test_store_contract.py``.
"""

from __future__ import annotations

from typing import Collection, Protocol, Sequence

import numpy as np

from store.audit import AuditTrail
from store.types import (
    CameraStatus,
    ErasedReferences,
    EventQuery,
    EventRecord,
    FaceSample,
    LiveTrack,
    LoggedEvent,
    MergeUndo,
    PersonHit,
    PersonInfo,
    StoredFace,
    TrackRef,
    VisitorInfo,
    VisitorMatch,
)


class PersonGallery(Protocol):
    """Enrolled persons and their faces, searchable by embedding. ``model``/``dim``: the embedder it holds."""

    model: str
    dim: int

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """For each query (N, dim), persons ranked by their best face's cosine similarity (each person once)."""
        ...

    def add_person(self, name: str, faces: Sequence[FaceSample]) -> list[int]:
        """Add faces to ``name`` (created if new), all or nothing; the new face ids."""
        ...

    def remove_person(self, name: str, missing_ok: bool = False) -> int:
        """Remove a person and all their faces; how many faces went (GalleryError when unknown)."""
        ...

    def remove_faces(self, name: str, face_ids: Sequence[int]) -> int:
        """Remove those of ``face_ids`` that are faces of ``name`` (an unmerge taking back what a promote added), and
        the person too when no face is left; how many faces went (0 when none is there any more)."""
        ...

    def persons(self) -> list[PersonInfo]: ...

    def faces_of(self, name: str) -> list[StoredFace]:
        """Every stored face of one person (GalleryError when unknown)."""
        ...

    def all_faces(self) -> list[StoredFace]: ...

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        """Switch to ``model``: every face gets a new embedding, all or nothing."""
        ...

    @property
    def face_count(self) -> int: ...

    def sync(self) -> bool:
        """Pick up changes other processes made (an enrolment while a worker runs); True when there were any."""
        ...

    def close(self) -> None: ...


class VisitorStore(Protocol):
    """Provisional ``visitor-N`` identities shared by every worker of the store."""

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """For each query (N, dim), visitors ranked by their best face's cosine similarity (each visitor once): the
        strangers this site has seen, the cohort a name must beat (`identity.naming`)."""
        ...

    def match_or_create(self, faces: Sequence[FaceSample], threshold: float, max_faces: int) -> VisitorMatch:
        """ONE atomic operation: the visitor whose faces best match any of ``faces`` at ``threshold`` or above
        (marked seen now), or else a new visitor holding the first ``max_faces`` of them. Two workers calling it
        for one stranger at the same instant get the same visitor."""
        ...

    def seen(self, visitor: str, faces: Sequence[FaceSample], max_faces: int, when: float | None = None) -> None:
        """Mark a visitor seen and add faces, keeping at most ``max_faces``; a visitor that was merged, promoted or
        expired meanwhile is left alone."""
        ...

    def reject(self, visitor: str, not_name: str) -> None:
        """Record that ``visitor`` is not ``not_name`` (GalleryError when the visitor is unknown)."""
        ...

    def rejections(self) -> dict[str, frozenset[str]]: ...

    def faces_of(self, visitor: str) -> list[StoredFace]: ...

    def all_faces(self) -> list[StoredFace]: ...

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        """Switch to ``model`` (with the person gallery, by `argusnet gallery reembed`)."""
        ...

    def list(self) -> list[VisitorInfo]: ...

    def merge(self, visitor: str, person: str, person_faces: Sequence[int] = (),
              live_tracks: Sequence[TrackRef] = ()) -> int:
        """The visitor is ``person``: its faces stop answering as a visitor and its name resolves to the person
        from now on; how many faces went (0 when it was already gone). The faces are kept aside, with
        ``person_faces`` (the face ids a promote added to the person) and ``live_tracks`` (those the merge renamed),
        so that `unmerge` can undo it (`merge_undo`)."""
        ...

    def merge_undo(self, visitor: str) -> MergeUndo | None:
        """What the merge of ``visitor`` kept for an unmerge; None when it was never merged, or merged before merges
        kept it (or copied by a migration, which does not copy it)."""
        ...

    def unmerge(self, visitor: str) -> int:
        """Undo ``merge``: the kept faces answer as ``visitor`` again (created and last seen as they were) and the
        merge record goes; how many faces came back (GalleryError when there is nothing to undo, or the undo is
        blocked: `MergeUndo.blocked`)."""
        ...

    def merged_into(self, visitor: str) -> str | None:
        """The person a visitor was merged into, or None."""
        ...

    def expire(self, older_than: float) -> list[str]:
        """Forget every visitor not seen since ``older_than`` (unix s); their names. The faces kept aside by merges
        made before ``older_than`` go too (those merges can no longer be undone; their records stay)."""
        ...

    def remove(self, visitor: str) -> int:
        """Erase one visitor, its faces and the rejections recorded for it; how many faces went (0 when it is not
        there)."""
        ...

    def erase_references(self, name: str) -> ErasedReferences:
        """Erase the rejections naming ``name`` (any visitor's "is not NAME") and the merges into or from it, with
        what those merges kept for an unmerge (the faces kept aside)."""
        ...

    def sync(self) -> bool: ...

    def close(self) -> None: ...


class NegativeStore(Protocol):
    """Negative evidence: faces kept as evidence that they are NOT a person (an operator said "not this person" about
    a track named so). A third gallery on the persons' embedder, shared by every process of the store; a face nearer
    to a person's negative faces than to their own is not named that person (the worker's rule)."""

    @property
    def model(self) -> str: ...

    def add(self, person: str, faces: Sequence[FaceSample]) -> list[int]:
        """Keep ``faces`` as evidence that they are not ``person``, all or nothing; the new face ids. GalleryError
        for an empty name, a visitor id or no faces."""
        ...

    def search(self, embeddings: np.ndarray, k: int) -> list[list[PersonHit]]:
        """For each query (N, dim), the persons ranked by their most similar negative face (each person once, best
        first), as `PersonGallery.search`."""
        ...

    def faces_of(self, person: str) -> list[StoredFace]:
        """The negative faces kept for ``person`` ([] when none)."""
        ...

    def remove_face(self, person: str, face_id: int) -> bool:
        """Remove one negative face of ``person``; False when ``person`` has no such face."""
        ...

    def erase(self, person: str) -> int:
        """Remove every negative face of ``person``; how many (0 when none)."""
        ...

    def counts(self) -> dict[str, int]:
        """Each person with negative evidence -> how many negative faces."""
        ...

    def all_faces(self) -> list[StoredFace]: ...

    def replace_embeddings(self, model: str, dim: int, embeddings: dict[int, np.ndarray]) -> None:
        """Switch to ``model`` (with the person gallery, by `argusnet gallery reembed`), all or nothing."""
        ...

    def sync(self) -> bool:
        """Pick up changes other processes made; True when there were any."""
        ...

    def close(self) -> None: ...


class MediaStore(Protocol):
    """Track crops as JPEG bytes under a key (``camera/track``)."""

    def put_crop(self, camera: str, track: int, crop: np.ndarray, when: float | None = None) -> str:
        """Store a track's best face (H, W, 3) RGB uint8; its key."""
        ...

    def get_crop(self, key: str) -> bytes:
        """The JPEG bytes of a stored crop (KeyError when there is none)."""
        ...

    def remove(self, key: str) -> bool: ...

    def expire(self, older_than: float) -> int:
        """Delete crops stored before ``older_than`` (unix s); how many."""
        ...

    def total_bytes(self) -> int:
        """The JPEG bytes of every stored crop together."""
        ...

    def trim_to(self, max_bytes: int) -> int:
        """Delete the oldest crops until the rest hold at most ``max_bytes``; how many went."""
        ...

    def close(self) -> None: ...


class EventLog(Protocol):
    """The durable history of track events: what a dashboard shows and an erasure must reach."""

    def append(self, records: Sequence[EventRecord]) -> list[int]:
        """Append in order; the new ids (increasing)."""
        ...

    def query(self, query: EventQuery) -> list[LoggedEvent]:
        """Matching events, newest first (oldest first with ``query.oldest_first``)."""
        ...

    def rename_identity(self, old: str, new: str) -> int:
        """Events naming ``old`` (a visitor) now name ``new`` (the person it was merged into); how many. Which
        events were renamed is kept, for ``restore_identity``."""
        ...

    def restore_identity(self, old: str, new: str) -> int:
        """Undo ``rename_identity(old, new)``: the events it renamed that still name ``new`` name ``old`` again, each
        exactly as it was before (events of ``new`` it did not rename, and renamed ones an operator un-named since,
        are left as they are); how many."""
        ...

    def unname_track(self, camera: str, track: int, name: str) -> int:
        """An operator said one track is not ``name``: its ``track_identified`` events naming ``name`` are
        withdrawn and its other events naming it keep no name, similarity or visitor flag from now on (none answers
        a query by that identity any more); how many events changed."""
        ...

    def delete_identity(self, name: str) -> tuple[int, list[str]]:
        """Delete every event naming ``name`` (after renames), leaving no copy of them in the backend; how many,
        and the crop keys those events held."""
        ...

    def expire(self, older_than: float) -> int:
        """Delete events captured before ``older_than`` (unix s); how many."""
        ...

    def close(self) -> None: ...


class LiveTracks(Protocol):
    """The tracks alive now, per camera; an entry that is not refreshed within its TTL expires by itself."""

    def put(self, track: LiveTrack, ttl_s: float) -> None: ...

    def remove(self, camera: str, track: int) -> None: ...

    def alive(self, camera: str | None = None, now: float | None = None) -> list[LiveTrack]:
        """Tracks whose TTL has not run out at ``now`` (default: the time now)."""
        ...

    def rename_identity(self, old: str, new: str) -> int:
        """Tracks naming ``old`` (a visitor) now name ``new`` (not a visitor); how many."""
        ...

    def rename_tracks(self, old: str, new: str) -> list[TrackRef]:
        """``rename_identity``, answering which tracks it renamed."""
        ...

    def restore_tracks(self, tracks: Sequence[TrackRef], old: str, new: str) -> int:
        """Undo ``rename_tracks(old, new)``: those of ``tracks`` still alive and naming ``new`` name the visitor
        ``old`` again (their TTL unchanged); how many."""
        ...

    def remove_identity(self, name: str) -> tuple[int, list[str]]:
        """Remove every live track naming ``name``; how many, and the crop keys they held."""
        ...

    def expire(self, now: float | None = None) -> int:
        """Drop entries whose TTL ran out (they are already invisible to ``alive``); how many."""
        ...

    def put_camera(self, status: CameraStatus, preview: bytes | None, ttl_s: float) -> None:
        """A camera's status and its latest annotated preview (JPEG bytes; None keeps no preview), kept for
        ``ttl_s``: the preview of a camera nobody serves any more vanishes by itself."""
        ...

    def cameras(self, now: float | None = None) -> list[CameraStatus]:
        """The cameras whose status has not expired at ``now``, by id."""
        ...

    def preview(self, camera: str) -> bytes:
        """The JPEG bytes of a camera's latest preview (KeyError when there is none or it expired)."""
        ...

    def expire_cameras(self, now: float | None = None) -> int:
        """Drop camera statuses and previews whose TTL ran out; how many."""
        ...

    def clear_previews(self) -> int:
        """Delete every preview now (an erasure: a preview may show the person's face and name); how many."""
        ...

    def close(self) -> None: ...


class Store(Protocol):
    """One backend's seven parts, opened together."""

    persons: PersonGallery
    visitors: VisitorStore
    negatives: NegativeStore
    media: MediaStore
    events: EventLog
    live: LiveTracks
    audit: AuditTrail

    def describe(self) -> str:
        """Where the data is (a directory, a URL without its password), for logs and messages."""
        ...

    def finish_erasure(self, name: str) -> tuple[str, ...]:
        """After an erasure of ``name`` (`identity.erasure`): rewrite what still holds deleted bytes (index files,
        SQLite's WAL, Redis change streams naming it); what the backend could not make unrecoverable, in words
        (empty when nothing)."""
        ...

    def record_erasure(self, name: str) -> None:
        """Keep a tombstone of ``name`` (`store.erasures`: a salted hash, never the name): writes a worker buffered
        during an outage are checked against it before they are made."""
        ...

    def erased(self, names: Collection[str]) -> dict[str, float]:
        """Which of ``names`` have a tombstone (were forgotten), with when (unix s; the latest forget)."""
        ...

    def close(self) -> None: ...
