"""Every key the Redis backend uses, in one place. All live under ``PREFIX:`` (``store.prefix``).

Names of persons can hold any character, so where a name is part of a key it is written as the hex of its UTF-8
bytes (``name_key``): no name can make its key collide with another key. Camera ids follow `shared.ids` (no ``:``
or ``/``)."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1
STORE_KIND = "argusnet-store"
REKEY_FIELD = "rekey_to"  # in the store's meta while `argusnet store rekey` runs: the new key's check value
GALLERIES = ("persons", "visitors", "negatives")


def name_key(name: str) -> str:
    return name.encode("utf-8").hex()


@dataclass(frozen=True)
class GalleryKeys:
    """The keys of one gallery (``persons``, ``visitors`` or ``negatives``) under ``PREFIX:NAME:``."""

    base: str

    @property
    def meta(self) -> str:  # hash: model, dim, created
        return f"{self.base}:meta"

    @property
    def created(self) -> str:  # hash: person name -> created (unix s); the index of persons
        return f"{self.base}:created"

    @property
    def seen(self) -> str:  # hash: person name -> last seen (unix s)
        return f"{self.base}:seen"

    @property
    def face_seq(self) -> str:  # counter: face ids
        return f"{self.base}:face_seq"

    def face(self, face_id: int) -> str:  # hash: person, model, embedding, crop, landmarks, source, created
        return f"{self.base}:face:{face_id}"

    @property
    def face_pattern(self) -> str:
        return f"{self.base}:face:*"

    def faces_of(self, name: str) -> str:  # set: the face ids of one person (a face's index entry)
        return f"{self.base}:faces:{name_key(name)}"

    def rejected(self, name: str) -> str:  # set: the names an operator said this one is not
        return f"{self.base}:rejected:{name_key(name)}"

    @property
    def merges(self) -> str:  # hash: merged name -> the person it is now
        return f"{self.base}:merges"

    def merged_face(self, face_id: int) -> str:  # hash: a face a merge kept aside (a face hash, renamed)
        return f"{self.base}:merged_face:{face_id}"

    @property
    def merged_face_pattern(self) -> str:
        return f"{self.base}:merged_face:*"

    def merge_undo(self, name: str) -> str:  # hash: into, merged_at, created, last_seen, undo, faces[, faces_expired]
        return f"{self.base}:merge_undo:{name_key(name)}"

    @property
    def merge_undos(self) -> str:  # sorted set: merged name by merged_at (+inf once its kept faces expired)
        return f"{self.base}:merge_undo"

    def counter(self, prefix: str) -> str:  # counter: prefix-N names (visitor-N)
        return f"{self.base}:counter:{prefix}"

    @property
    def generation(self) -> str:  # counter: bumped with every change-stream entry
        return f"{self.base}:generation"

    @property
    def changes(self) -> str:  # stream: gen, op (add/remove/merge/unmerge/replace), person, ids
        return f"{self.base}:changes"

    @property
    def changes_rewrite(self) -> str:  # stream: the change stream being rewritten by an erasure (renamed into place)
        return f"{self.base}:changes:rewrite"

    @property
    def lock(self) -> str:  # string: the token of the process writing this gallery now
        return f"{self.base}:lock"


@dataclass(frozen=True)
class StoreKeys:
    prefix: str

    @property
    def meta(self) -> str:  # hash: kind, schema_version, created, key_check (encrypted), rekey_to (rekey running)
        return f"{self.prefix}:meta"

    @property
    def pattern(self) -> str:
        return f"{self.prefix}:*"

    def gallery(self, name: str) -> GalleryKeys:
        return GalleryKeys(f"{self.prefix}:{name}")

    # events
    @property
    def events(self) -> str:  # stream of events, entry id N-0 where N is the event id
        return f"{self.prefix}:events"

    @property
    def event_seq(self) -> str:  # counter: event ids
        return f"{self.prefix}:events:seq"

    @property
    def event_names_base(self) -> str:  # + ":" + name_key(name): sorted set of the event ids naming a person
        return f"{self.prefix}:events:name"

    @property
    def event_appended_base(self) -> str:  # + ":" + sha1 of an appended record: its event id, kept a while so that
        return f"{self.prefix}:events:appended"  # an append retried after a timeout is not logged twice

    def events_of(self, name: str) -> str:
        return f"{self.event_names_base}:{name_key(name)}"

    @property
    def events_rewrite(self) -> str:  # stream: the event log being rewritten by an erasure (renamed into place)
        return f"{self.prefix}:events:rewrite"

    @property
    def unnamed(self) -> str:  # set: ids of events an operator un-named ("not this person"), applied when read
        return f"{self.prefix}:events:unnamed"

    @property
    def renames(self) -> str:  # hash: visitor -> the person its events name now
        return f"{self.prefix}:events:renames"

    # media
    def crop(self, key: str) -> str:  # string: JPEG bytes
        return f"{self.prefix}:crop:{key}"

    @property
    def crops(self) -> str:  # sorted set: crop key by created time
        return f"{self.prefix}:crops"

    # live tracks
    def live(self, camera: str, track: int) -> str:  # string: the track as JSON, with a TTL
        return f"{self.live_base(camera)}{track}"

    def live_base(self, camera: str) -> str:
        return f"{self.prefix}:live:track:{camera}/"

    def live_camera(self, camera: str) -> str:  # sorted set: track ids of one camera by expiry (unix s)
        return f"{self.prefix}:live:camera:{camera}"

    def camera_status(self, camera: str) -> str:  # hash: body (JSON), preview (JPEG); with a TTL
        return f"{self.prefix}:camera:{camera}"

    @property
    def camera_index(self) -> str:  # sorted set: camera ids by expiry of their status (unix s)
        return f"{self.prefix}:cameras"

    @property
    def live_cameras(self) -> str:  # set: cameras with live tracks
        return f"{self.prefix}:live:cameras"

    # audit log (store.redis.audit)
    @property
    def audit(self) -> str:  # list: the audit records (canonical JSON), oldest first
        return f"{self.prefix}:audit"

    @property
    def audit_subjects(self) -> str:  # hash: person name -> subject id
        return f"{self.prefix}:audit:subjects"

    @property
    def erasures(self) -> str:  # hash: tombstone of a forgotten name (store.erasures, never the name) -> when
        return f"{self.prefix}:erasures"

    @property
    def erasure_salt(self) -> str:  # string: the random salt of those tombstones
        return f"{self.prefix}:erasures:salt"
