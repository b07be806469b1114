"""The tamper-evident audit log of a local store: who enrolled, removed, renamed, named or forgot whom, and when.

``audit.jsonl`` in the store directory holds one JSON record a line, append-only::

    {"seq": N, "ts": unix_s, "actor": str, "action": str, "subject": "s-<16 hex>"|null, "details": {...},
     "prev": <hash of the previous record, or 64 zeros>, "hash": <sha256 hex>}

``hash`` is the SHA-256 of the canonical JSON (sorted keys, compact separators, UTF-8) of the record without
``hash``, and ``prev`` chains each record to the one before, so an edited, removed, reordered or truncated record
is found by ``AuditLog.verify``. (Cutting whole records off the end of the file leaves a shorter chain that is
still consistent; that needs an anchor kept elsewhere.)

Subjects are pseudonymous: a record holds an opaque id, and ``audit-subjects.json`` beside the log maps names
to ids. ``forget_subject`` erases a name from that mapping; the records stay intact and verifiable but no
longer lead to the name. Names must therefore go in ``subject``, never in ``details``.

Appends are safe across processes of one host: the log is ``flock``-ed while the last record is read, the new
one appended and fsynced, and the mapping rewritten (atomically).
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from shared.errors import StoreError
from shared.files import atomic_write

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
SUBJECTS_FILE = "audit-subjects.json"
GENESIS = "0" * 64
ACTIONS = ("enrol", "remove", "rename", "name_visitor", "reject", "confirm", "forget", "reembed", "login",
           "login_failed", "logout", "user_add", "user_remove")
RECORD_KEYS = frozenset({"seq", "ts", "actor", "action", "subject", "details", "prev", "hash"})
ALTERED = "altered"
REORDERED = "removed or reordered"
TRUNCATED = "truncated"
SUBJECTS_VERSION = 1
TAIL_CHUNK = 64 * 1024


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """The SHA-256 hex of the canonical JSON of ``record`` without its ``hash``."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


ACTOR_ENV = "ARGUSNET_ACTOR"  # set by the dashboard for the commands it runs (dashboard:<user>)


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
    """What ``verify`` found: ``ok``, how many ``records`` (lines) the log holds, and the first bad one."""

    ok: bool
    records: int
    first_bad_line: int | None = None
    first_bad_seq: int | None = None
    reason: str | None = None


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    """A line's record, or None when it is not a JSON object."""
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


def verify_lines(lines: list[bytes]) -> AuditReport:
    """Walk the chain of ``lines`` (each with its newline, as read); the first bad record."""
    prev_seq, prev_hash = 0, GENESIS
    for number, raw in enumerate(lines, start=1):
        record = _parse_line(raw) if raw.endswith(b"\n") else None
        reason = _check(record, prev_seq, prev_hash)
        if reason is not None:
            seq = record.get("seq") if record is not None else None
            return AuditReport(False, len(lines), number, seq if isinstance(seq, int) else None, reason)
        prev_seq, prev_hash = record["seq"], record["hash"]
    return AuditReport(True, len(lines))


class AuditLog:
    """The audit log of the local store in ``directory`` (which must exist before anything is appended)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / AUDIT_FILE
        self.subjects_path = self.directory / SUBJECTS_FILE

    def append(self, actor: str | None = None, action: str = "", subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        """Append one record; ``actor`` defaults to the CLI user, ``subject`` is a name (stored as its id).
        ValueError for an unknown action or a bad argument; StoreError when the log cannot be written."""
        actor = default_actor() if actor is None else actor
        details = _validate(actor, action, subject, details)
        with self._locked(fcntl.LOCK_EX) as f:
            subjects = self._read_subjects()
            subject_id = None if subject is None else subjects.get(subject)
            if subject is not None and subject_id is None:
                subject_id = f"s-{secrets.token_hex(8)}"
                subjects[subject] = subject_id
                self._write_subjects(subjects)
            return self._write_record(f, actor, action, subject_id, subject, details)

    def forget_subject(self, name: str, actor: str | None = None) -> bool:
        """Erase ``name``: a ``forget`` record (holding only its id) is appended and the name leaves the mapping.
        The records stay intact and verifiable. False when the log never named ``name``."""
        actor = default_actor() if actor is None else actor
        _validate(actor, "forget", name, None)
        with self._locked(fcntl.LOCK_EX) as f:
            subjects = self._read_subjects()
            subject_id = subjects.pop(name, None)
            self._write_record(f, actor, "forget", subject_id, None, {})
            if subject_id is not None:
                self._write_subjects(subjects)
        return subject_id is not None

    def list(self) -> list[AuditRecord]:
        """Every record, oldest first, with the name its subject id maps to (None once forgotten).
        StoreError naming the line when a line is not a record (``verify`` says more)."""
        lines, subjects = self._snapshot()
        names = {sid: name for name, sid in subjects.items()}
        records = []
        for number, raw in enumerate(lines, start=1):
            obj = _parse_line(raw)
            if obj is None or not RECORD_KEYS <= set(obj):
                raise StoreError(f"{self.path} line {number} is not an audit record; run `argusnet audit verify`")
            records.append(AuditRecord(seq=obj["seq"], ts=obj["ts"], actor=obj["actor"], action=obj["action"],
                                       subject_id=obj["subject"], subject=names.get(obj["subject"]),
                                       details=obj["details"], prev=obj["prev"], hash=obj["hash"]))
        return records

    def verify(self) -> AuditReport:
        """Check every record's hash and its link to the one before; an empty or missing log is intact."""
        lines, _ = self._snapshot(subjects=False)
        return verify_lines(lines)

    # -- internals ------------------------------------------------------------------------------------------

    def _snapshot(self, subjects: bool = True) -> tuple[list[bytes], dict[str, str]]:
        """The log's lines and the mapping, read under a shared lock (no append is half-written meanwhile)."""
        if not self.path.is_file():
            return [], {}
        with self._locked(fcntl.LOCK_SH, mode="rb") as f:
            data = f.read()
            mapping = self._read_subjects() if subjects else {}
        return data.splitlines(keepends=True), mapping

    @contextmanager
    def _locked(self, how: int, mode: str = "a+b") -> Iterator[BinaryIO]:
        if not self.directory.is_dir():
            raise StoreError(f"cannot write the audit log: no store directory at {self.directory}")
        try:
            f = open(self.path, mode)
        except OSError as exc:
            raise StoreError(f"cannot open the audit log {self.path}: {exc}") from exc
        with f:
            fcntl.flock(f.fileno(), how)
            try:
                yield f
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _write_record(self, f: BinaryIO, actor: str, action: str, subject_id: str | None, name: str | None,
                      details: dict[str, Any]) -> AuditRecord:
        seq, prev = self._last(f)
        body = {"seq": seq + 1, "ts": round(time.time(), 6), "actor": actor, "action": action,
                "subject": subject_id, "details": details, "prev": prev}
        body["hash"] = record_hash(body)
        try:
            f.write(canonical(body) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(f"cannot append to the audit log {self.path}: {exc}") from exc
        return AuditRecord(seq=body["seq"], ts=body["ts"], actor=actor, action=action, subject_id=subject_id,
                           subject=name, details=details, prev=prev, hash=body["hash"])

    def _last(self, f: BinaryIO) -> tuple[int, str]:
        """The last record's seq and hash (0 and the genesis hash for an empty log), read from the file's tail.
        StoreError when the tail is damaged: a new record is never chained to a broken one."""
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0, GENESIS
        size = min(end, TAIL_CHUNK)
        while True:
            f.seek(end - size)
            tail = f.read(size)
            lines = tail.splitlines(keepends=True)
            if len(lines) >= 2 or size == end:
                break
            size = min(end, size * 2)
        record = _parse_line(lines[-1]) if lines[-1].endswith(b"\n") else None
        if record is None or not isinstance(record.get("seq"), int) or not isinstance(record.get("hash"), str):
            raise StoreError(f"the audit log {self.path} ends with a damaged record; nothing was appended (run "
                             f"`argusnet audit verify --gallery {self.directory}`)")
        return record["seq"], record["hash"]

    def _read_subjects(self) -> dict[str, str]:
        try:
            data = json.loads(self.subjects_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the audit subject mapping {self.subjects_path}: {exc}") from exc
        subjects = data.get("subjects") if isinstance(data, dict) else None
        if not isinstance(subjects, dict):
            raise StoreError(f"the audit subject mapping {self.subjects_path} is not a mapping of names to ids")
        return subjects

    def _write_subjects(self, subjects: dict[str, str]) -> None:
        data = canonical({"version": SUBJECTS_VERSION, "subjects": subjects}) + b"\n"
        try:
            atomic_write(self.subjects_path, data, durable=True)
        except OSError as exc:
            raise StoreError(f"cannot write the audit subject mapping {self.subjects_path}: {exc}") from exc


def _validate(actor: str, action: str, subject: str | None, details: Mapping[str, Any] | None) -> dict[str, Any]:
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
