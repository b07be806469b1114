"""The local store's audit log (`store.audit`): ``audit.jsonl`` in the store directory, one record a line,
append-only, and ``audit-subjects.json`` beside it mapping names to subject ids.

Appends are safe across processes of one host: the log is ``flock``-ed while the last record is read, the new
one appended and fsynced, and the mapping rewritten (atomically).
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Mapping

from shared.errors import StoreError
from shared.files import atomic_write
from store.audit import (
    AuditKey,
    AuditRecord,
    AuditReport,
    as_record,
    canonical,
    chain_tail,
    default_actor,
    new_subject_id,
    next_record,
    records_of,
    validate,
    verify_chain,
)

AUDIT_FILE = "audit.jsonl"
SUBJECTS_FILE = "audit-subjects.json"
SUBJECTS_VERSION = 1
TAIL_CHUNK = 64 * 1024


class FileAuditLog:
    """The audit log of the local store in ``directory`` (which must exist before anything is appended)."""

    def __init__(self, directory: str | os.PathLike[str], key: AuditKey | None = None) -> None:
        self.directory = Path(directory)
        self.key = key  # store.audit_key_file: records appended are keyed, verify checks their HMACs
        self.path = self.directory / AUDIT_FILE
        self.subjects_path = self.directory / SUBJECTS_FILE
        self.where = str(self.path)

    def append(self, actor: str | None = None, action: str = "", subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        actor = default_actor() if actor is None else actor
        details = validate(actor, action, subject, details)
        with self._locked(fcntl.LOCK_EX) as f:
            subjects = self._read_subjects()
            subject_id = None if subject is None else subjects.get(subject)
            if subject is not None and subject_id is None:
                subject_id = subjects[subject] = new_subject_id()
                self._write_subjects(subjects)
            return self._write_record(f, actor, action, subject_id, subject, details)

    def forget_subject(self, name: str, actor: str | None = None) -> bool:
        actor = default_actor() if actor is None else actor
        validate(actor, "forget", name, None)
        with self._locked(fcntl.LOCK_EX) as f:
            subjects = self._read_subjects()
            subject_id = subjects.pop(name, None)
            self._write_record(f, actor, "forget", subject_id, None, {})
            if subject_id is not None:
                self._write_subjects(subjects)
        return subject_id is not None

    def list(self) -> list[AuditRecord]:
        lines, subjects = self._snapshot()
        try:
            return records_of(lines, subjects, str(self.path))
        except ValueError as exc:
            raise StoreError(str(exc)) from None

    def verify(self) -> AuditReport:
        lines, _ = self._snapshot(subjects=False)
        return verify_chain(lines, key=self.key)

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
        body = next_record(seq, prev, actor, action, subject_id, details, self.key)
        try:
            f.write(canonical(body) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise StoreError(f"cannot append to the audit log {self.path}: {exc}") from exc
        return as_record(body, name)

    def _last(self, f: BinaryIO) -> tuple[int, str]:
        """The last record's seq and hash, read from the file's tail. StoreError when the tail is damaged: a new
        record is never chained to a broken one."""
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return chain_tail(None, self.where)
        size = min(end, TAIL_CHUNK)
        while True:
            f.seek(end - size)
            lines = f.read(size).splitlines(keepends=True)
            if len(lines) >= 2 or size == end:
                break
            size = min(end, size * 2)
        tail = chain_tail(lines[-1], self.where) if lines[-1].endswith(b"\n") else None
        if tail is None:
            raise StoreError(f"the audit log {self.path} ends with a damaged record; nothing was appended (run "
                             f"`argusnet audit verify --gallery {self.directory}`)")
        return tail

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
