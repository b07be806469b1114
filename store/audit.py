"""The tamper-evident audit log of a store: who enrolled, removed, renamed, named, merged or forgot whom, and when.

Every backend keeps one chain of records (`AuditTrail`; the local store in ``audit.jsonl`` beside its data,
`store.local.audit`; the Redis store in a list under its prefix, `store.redis.audit`). A record is::

    {"seq": N, "ts": unix_s, "actor": str, "action": str, "subject": "s-<16 hex>"|null, "details": {...},
     "prev": <hash of the previous record, or 64 zeros>, "hash": <sha256 hex>}

stored as its canonical JSON (sorted keys, compact separators, UTF-8). ``hash`` is the SHA-256 of the canonical
JSON of the record without ``hash``, and ``prev`` chains each record to the one before, so an edited, removed,
reordered or truncated record is found by ``verify``. (Cutting whole records off the end leaves a shorter chain
that is still consistent; that needs an anchor kept elsewhere.)

Subjects are pseudonymous: a record holds an opaque id, and a mapping beside the log (``audit-subjects.json``; a
Redis hash) maps names to ids. ``forget_subject`` erases a name from that mapping; the records stay intact and
verifiable but no longer lead to the name. Names must therefore go in ``subject``, never in ``details``.

This module holds what every backend shares: the record format, the chain check, argument checks and the actor.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

log = logging.getLogger(__name__)

GENESIS = "0" * 64
ACTIONS = ("enrol", "remove", "rename", "name_visitor", "merge", "unmerge", "reject", "confirm", "forget", "reembed",
           "login", "login_failed", "logout", "user_add", "user_remove", "rekey", "remove_negative",
           "read")
RECORD_KEYS = frozenset({"seq", "ts", "actor", "action", "subject", "details", "prev", "hash"})
ALTERED = "altered"
REORDERED = "removed or reordered"
TRUNCATED = "truncated"
ACTOR_ENV = "ARGUSNET_ACTOR"  # set by the dashboard for the commands it runs (dashboard:<user>)


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """The SHA-256 hex of the canonical JSON of ``record`` without its ``hash``."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


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

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": self.ts, "actor": self.actor, "action": self.action,
                "subject": self.subject, "subject_id": self.subject_id, "details": dict(self.details),
                "prev": self.prev, "hash": self.hash}


@dataclass(frozen=True)
class AuditReport:
    """What ``verify`` found: ``ok``, how many ``records`` the log holds, and the first bad one (its line, 1-based:
    a line of the file, an element of the Redis list)."""

    ok: bool
    records: int
    first_bad_line: int | None = None
    first_bad_seq: int | None = None
    reason: str | None = None


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


def _check(record: dict[str, Any] | None, prev_seq: int, prev_hash: str) -> str | None:
    """Why one record breaks the chain (None when it does not)."""
    if record is None:
        return TRUNCATED
    if set(record) != RECORD_KEYS or record_hash(record) != record["hash"]:
        return ALTERED
    if record["seq"] != prev_seq + 1 or record["prev"] != prev_hash:
        return REORDERED
    return None


def verify_chain(raws: Sequence[bytes], terminated: bool = True) -> AuditReport:
    """Walk the chain of stored records (``terminated``: each must end with a newline, as lines of a file do); the
    first bad one."""
    prev_seq, prev_hash = 0, GENESIS
    for number, raw in enumerate(raws, start=1):
        record = parse_record(raw) if raw.endswith(b"\n") or not terminated else None
        reason = _check(record, prev_seq, prev_hash)
        if reason is not None:
            seq = record.get("seq") if record is not None else None
            return AuditReport(False, len(raws), number, seq if isinstance(seq, int) else None, reason)
        prev_seq, prev_hash = record["seq"], record["hash"]
    return AuditReport(True, len(raws))


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
                details: dict[str, Any]) -> dict[str, Any]:
    """The record that follows the one with ``seq`` and hash ``prev``, hashed."""
    body = {"seq": seq + 1, "ts": round(time.time(), 6), "actor": actor, "action": action, "subject": subject_id,
            "details": details, "prev": prev}
    body["hash"] = record_hash(body)
    return body


def as_record(body: Mapping[str, Any], name: str | None) -> AuditRecord:
    return AuditRecord(seq=body["seq"], ts=body["ts"], actor=body["actor"], action=body["action"],
                       subject_id=body["subject"], subject=name, details=body["details"], prev=body["prev"],
                       hash=body["hash"])


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
