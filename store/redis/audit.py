"""The Redis store's audit log (`store.audit`): the records in the list ``PREFIX:audit`` (canonical JSON, oldest
first) and the name -> subject id mapping in the hash ``PREFIX:audit:subjects``.

An append reads the last record and pushes the next one in one optimistic transaction (WATCH on both keys, then
MULTI/EXEC; retried when another process appended meanwhile), so processes on any host share one chain and a
record is never chained to a record that is not the last. A forget pushes its record and deletes the name from the
mapping in the same transaction. A damaged last element is refused (nothing is chained to it), as a damaged last
line is on the local backend.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import redis

from shared.errors import StoreError
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
from store.redis.client import redis_op
from store.redis.keys import StoreKeys

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50  # appends racing with others: each lost race costs one round trip
PAGE = 1000


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8")


class RedisAuditLog:
    """The audit log of the Redis store under ``keys.prefix`` (the connection belongs to the caller)."""

    def __init__(self, client: redis.Redis, keys: StoreKeys, store_where: str, key: AuditKey | None = None) -> None:
        self.key = key  # store.audit_key_file: records appended are keyed, verify checks their HMACs
        self._r = client
        self._k = keys
        self.where = f"redis store {store_where} ({keys.audit})"

    @redis_op("appending to the audit log")
    def append(self, actor: str | None = None, action: str = "", subject: str | None = None,
               details: Mapping[str, Any] | None = None) -> AuditRecord:
        actor = default_actor() if actor is None else actor
        details = validate(actor, action, subject, details)
        return self._push(actor, action, subject, details, forget=False)

    @redis_op("appending to the audit log")
    def forget_subject(self, name: str, actor: str | None = None) -> bool:
        actor = default_actor() if actor is None else actor
        validate(actor, "forget", name, None)
        return self._push(actor, "forget", name, {}, forget=True).subject_id is not None

    def _push(self, actor: str, action: str, name: str | None, details: dict[str, Any],
              forget: bool) -> AuditRecord:
        """One record after the current last one, in a WATCH/MULTI/EXEC retried on a lost race. ``forget``: the
        record names ``name``'s id (if any) and the name leaves the mapping; else a new name gets an id."""
        for _ in range(MAX_ATTEMPTS):
            with self._r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(self._k.audit, self._k.audit_subjects)
                    seq, prev = self._tail(pipe)
                    subject_id = None if name is None else _text(pipe.hget(self._k.audit_subjects, name))
                    pipe.multi()
                    if forget and subject_id is not None:
                        pipe.hdel(self._k.audit_subjects, name)
                    elif not forget and name is not None and subject_id is None:
                        subject_id = new_subject_id()
                        pipe.hset(self._k.audit_subjects, name, subject_id)
                    body = next_record(seq, prev, actor, action, subject_id, details, self.key)
                    pipe.rpush(self._k.audit, canonical(body))
                    pipe.execute()
                except redis.WatchError:
                    continue
            return as_record(body, None if forget else name)
        raise StoreError(f"{self.where}: {MAX_ATTEMPTS} appends in a row lost the race with other processes' "
                         "appends; nothing was appended")

    def _tail(self, pipe: redis.client.Pipeline) -> tuple[int, str]:
        tail = chain_tail(pipe.lindex(self._k.audit, -1), self.where)
        if tail is None:
            raise StoreError(f"{self.where} ends with a damaged record; nothing was appended (run `argusnet audit "
                             "verify`)")
        return tail

    def _elements(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            page = self._r.lrange(self._k.audit, len(out), len(out) + PAGE - 1)
            out.extend(page)
            if len(page) < PAGE:
                return out

    @redis_op("reading the audit log")
    def list(self) -> list[AuditRecord]:
        subjects = {k.decode("utf-8"): v.decode("utf-8") for k, v in self._r.hgetall(self._k.audit_subjects).items()}
        try:
            return records_of(self._elements(), subjects, self.where)
        except ValueError as exc:
            raise StoreError(str(exc)) from None

    @redis_op("reading the audit log")
    def verify(self) -> AuditReport:
        return verify_chain(self._elements(), terminated=False, key=self.key)
