"""The tamper-evident audit log of a store: who enrolled, removed, renamed, named, merged or forgot whom, and when.

Every backend keeps one chain of records (`AuditTrail`; the local store in ``audit.jsonl`` beside its data,
`store.local.audit`; the Redis store in a list under its prefix, `store.redis.audit`). A record is::

    {"seq": N, "ts": unix_s, "actor": str, "action": str, "subject": "s-<16 hex>"|null, "details": {...},
     "prev": <hash of the previous record, or 64 zeros>, "hash": <sha256 hex>}

stored as its canonical JSON (sorted keys, compact separators, UTF-8). ``hash`` is the SHA-256 of the canonical
JSON of the record without ``hash``, and ``prev`` chains each record to the one before, so an edited, removed,
reordered or truncated record is found by ``verify``. (Cutting whole records off the end leaves a shorter chain
that is still consistent; that needs an anchor kept elsewhere.)

A plain chain only finds accidents: whoever can write the log can recompute every hash. With an audit key
(``store.audit_key_file``: 32 random bytes as 64 hex digits, kept apart from the store, made by the deploy steps)
each record also holds ``"key": <the key's id>`` and its ``hash`` is the HMAC-SHA256 under the key of the canonical
JSON without ``hash``, so a rewritten record cannot be given a valid hash without the key. ``verify`` with the key
checks every keyed record's HMAC and refuses an unkeyed record after a keyed one (records stripped of their key),
a record keyed with another key, and a non-empty log with no keyed record at all (all of it rewritten as plain
records); plain records before the first keyed one (written before the key was set) are counted and reported.
``verify`` without the key checks plain records as before and says the chain is unkeyed; a keyed record it cannot
check fails it.

Subjects are pseudonymous: a record holds an opaque id, and a mapping beside the log (``audit-subjects.json``; a
Redis hash) maps names to ids. ``forget_subject`` erases a name from that mapping; the records stay intact and
verifiable but no longer lead to the name. Names must therefore go in ``subject``, never in ``details``.

This module holds what every backend shares: the record format, the chain check, argument checks and the actor.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from shared.errors import InputError
from store.crypto import load_key

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ACTIONS = ("enrol", "remove", "rename", "name_visitor", "merge", "unmerge", "reject", "confirm", "forget", "reembed",
           "login", "login_failed", "logout", "user_add", "user_remove", "rekey", "remove_negative",
           "read")
RECORD_KEYS = frozenset({"seq", "ts", "actor", "action", "subject", "details", "prev", "hash"})
KEYED_RECORD_KEYS = RECORD_KEYS | {"key"}
ALTERED = "altered"
STRIPPED = "not keyed, after keyed records (rewritten without the audit key)"
OTHER_KEY = "keyed with another audit key than store.audit_key_file"
NO_KEYED = "no record is keyed, but store.audit_key_file is set (the log was rewritten as plain records)"
NO_KEY = "keyed: set store.audit_key_file to the audit key to check it"
KEY_FIELD = "store.audit_key_file"
KEY_ID_LABEL = b"argusnet audit key id v1"
REORDERED = "removed or reordered"
TRUNCATED = "truncated"
ACTOR_ENV = "ARGUSNET_ACTOR"  # set by the dashboard for the commands it runs (dashboard:<user>)


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, Any], key: "AuditKey | None" = None) -> str:
    """The SHA-256 hex of the canonical JSON of ``record`` without its ``hash``; with ``key``, its HMAC-SHA256."""
    body = canonical({k: v for k, v in record.items() if k != "hash"})
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key.secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, repr=False)
class AuditKey:
    """The audit key (``store.audit_key_file``): ``id`` (public, in every keyed record) names it without revealing
    it; ``source`` is the file, for messages."""

    secret: bytes
    source: str

    @property
    def id(self) -> str:
        return hmac.new(self.secret, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path | None, store_dir: Path | None = None) -> "AuditKey | None":
        """The key in ``path`` (None when unset); InputError for a bad file, or one inside the local store's
        directory ``store_dir`` (a key kept beside the log protects nothing from whoever can write the log)."""
        if path is None:
            return None
        if store_dir is not None and Path(path).resolve().is_relative_to(Path(store_dir).resolve()):
            raise InputError(f"{KEY_FIELD} {path} is inside the store directory {store_dir}: keep the audit key "
                             "apart from the store (e.g. in the site's secrets folder)")
        return cls(load_key(path, KEY_FIELD), str(path))


def default_actor() -> str:
    """``$ARGUSNET_ACTOR`` when set, else ``cli:`` + the login name (``cli:uid<N>`` where the system cannot name
    the user)."""
    if os.environ.get(ACTOR_ENV):
        return os.environ[ACTOR_ENV]
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError, ImportError) as exc:
        log.debug("no login name (%s): naming the actor by uid", exc)
        return f"cli:uid{os.getuid()}"


def new_subject_id() -> str:
    return f"s-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class AuditRecord:
    """One record as stored (``subject_id``), with the name it maps to while the mapping still holds it."""

    seq: int
    ts: float
    actor: str
    action: str
    subject_id: str | None
    subject: str | None
    details: Mapping[str, Any] = field(default_factory=dict)
    prev: str = GENESIS
    hash: str = GENESIS
    key: str | None = None  # the audit key's id when the record is keyed

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action,
                "subject": self.subject, "subject_id": self.subject_id, "details": dict(self.details),
                "prev": self.prev, "hash": self.hash, "key": self.key}


@dataclass(frozen=True)
class AuditReport:
    """What ``verify`` found: ``ok``, how many ``records`` the log holds, and the first bad one (its line, 1-based:
    a line of the file, an element of the Redis list)."""

    ok: bool
    records: int
    first_bad_line: int | None = None
    first_bad_seq: int | None = None
    reason: str | None = None
    keyed: int = 0  # records whose hash is an HMAC under the audit key (checked only when the key is set)
    key_set: bool = False  # whether the check had the audit key (store.audit_key_file)

    @property
    def unkeyed(self) -> int:
        """Records only hash-chained: anyone who can write the log could have rewritten them."""
        return self.records - self.keyed


class AuditTrail(Protocol):
    """One store's audit log (`store.local.audit.FileAuditLog`, `store.redis.audit.RedisAuditLog`)."""

    where: str  # the log's place, for messages: a file path, or a Redis key without the server's password

    def append(self, actor: str | None = None, action: str = "", subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Append one record; ``actor`` defaults to `default_actor`, ``subject`` is a name (stored as its id).
        ValueError for an unknown action or a bad argument; StoreError when the log cannot be written (or ends
        with a damaged record: nothing is chained to it)."""
        ...

    def forget_subject(self, name: str, actor: str | None = None) -> bool:
        """Erase ``name``: a ``forget`` record (holding only its id) is appended and the name leaves the mapping.
        False when the log never named ``name``."""
        ...

    def list(self) -> list[AuditRecord]:
        """Every record, oldest first, with the name its subject maps to (None once forgotten). StoreError naming
        the line when one is not a record."""
        ...

    def verify(self) -> AuditReport:
        """Check every record's hash and its link to the one before; an empty log is intact."""
        ...


def parse_record(raw: bytes) -> dict[str, Any] | None:
    """A stored record as a dict, or None when it is not a JSON object."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _check(record: dict[str, Any] | None, prev_seq: int, prev_hash: str, key: AuditKey | None,
           keyed_before: bool) -> str | None:
    """Why one record breaks the chain (None when it does not); ``keyed_before``: a keyed record came before."""
    if record is None:
        return TRUNCATED
    fields = set(record)
    if fields == KEYED_RECORD_KEYS:
        if key is None:
            return NO_KEY
        if record["key"] != key.id:
            return OTHER_KEY
        if not hmac.compare_digest(record_hash(record, key), str(record["hash"])):
            return ALTERED
    elif fields != RECORD_KEYS or record_hash(record) != record["hash"]:
        return ALTERED
    elif keyed_before:
        return STRIPPED
    if record["seq"] != prev_seq + 1 or record["prev"] != prev_hash:
        return REORDERED
    return None


def verify_chain(raws: Sequence[bytes], terminated: bool = True, key: AuditKey | None = None) -> AuditReport:
    """Walk the chain of stored records (``terminated``: each must end with a newline, as lines of a file do;
    ``key``: the audit key, see the module's text); the first bad one."""
    prev_seq, prev_hash, keyed = 0, GENESIS, 0
    for number, raw in enumerate(raws, start=1):
        record = parse_record(raw) if raw.endswith(b"\n") or not terminated else None
        reason = _check(record, prev_seq, prev_hash, key, keyed > 0)
        if reason is not None:
            seq = record.get("seq") if record is not None else None
            return AuditReport(False, len(raws), number, seq if isinstance(seq, int) else None, reason, keyed,
                               key is not None)
        prev_seq, prev_hash = record["seq"], record["hash"]
        keyed += "key" in record
    if key is not None and raws and keyed == 0:
        return AuditReport(False, len(raws), 1, 1, NO_KEYED, 0, True)
    return AuditReport(True, len(raws), keyed=keyed, key_set=key is not None)


def chain_tail(raw: bytes | None, where: str) -> tuple[int, str] | None:
    """The seq and hash of the last stored record (``raw``; None: an empty log gives seq 0 and the genesis hash),
    or None when it is damaged: the caller refuses to chain a new record to it."""
    if raw is None:
        return 0, GENESIS
    record = parse_record(raw)
    if record is None or not isinstance(record.get("seq"), int) or not isinstance(record.get("hash"), str):
        log.debug("audit log %s: the last record is damaged", where)
        return None
    return record["seq"], record["hash"]


def next_record(seq: int, prev: str, actor: str, action: str, subject_id: str | None,
                details: dict[str, Any], key: AuditKey | None = None) -> dict[str, Any]:
    """The record that follows the one with ``seq`` and hash ``prev``, hashed (with ``key``: keyed, its hash an
    HMAC under the key)."""
    body = {"seq": seq + 1, "ts": round(time.time(), 6), "actor": actor, "action": action, "subject": subject_id,
            "details": details, "prev": prev}
    if key is not None:
        body["key"] = key.id
    body["hash"] = record_hash(body, key)
    return body


def as_record(body: Mapping[str, Any], name: str | None) -> AuditRecord:
    return AuditRecord(seq=body["seq"], ts=body["ts"], actor=body["actor"], action=body["action"],
                       subject_id=body["subject"], subject=name, details=body["details"], prev=body["prev"],
                       hash=body["hash"], key=body.get("key"))


def records_of(raws: Sequence[bytes], subjects: Mapping[str, str], where: str) -> list[AuditRecord]:
    """The stored records as `AuditRecord` with their names (``subjects``: name -> id); ValueError naming the first
    element that is not a record."""
    names = {sid: name for name, sid in subjects.items()}
    out = []
    for number, raw in enumerate(raws, start=1):
        obj = parse_record(raw)
        if obj is None or not RECORD_KEYS <= set(obj):
            raise ValueError(f"{where} record {number} is not an audit record; run `argusnet audit verify`")
        out.append(as_record(obj, names.get(obj["subject"])))
    return out


def validate(actor: str, action: str, subject: str | None, details: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's details as a plain dict; ValueError saying what is wrong with an argument."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; expected one of {', '.join(ACTIONS)}")
    if not isinstance(actor, str) or not actor:
        raise ValueError(f"the audit actor must be a non-empty string, got {actor!r}")
    if subject is not None and (not isinstance(subject, str) or not subject):
        raise ValueError(f"the audit subject must be a non-empty name or None, got {subject!r}")
    if details is not None and not isinstance(details, Mapping):
        raise ValueError(f"audit details must be a mapping, got {type(details).__name__}")
    details = dict(details or {})
    try:
        canonical(details)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit details must be plain JSON (strings, numbers, lists, mappings): {exc}") from exc
    return details
