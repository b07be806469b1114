"""The audit log contract (`store.audit.AuditTrail`) on every backend: one hash chain, pseudonymous subjects, a
forget that lets go of the name, tampering found, a worker's automatic merge audited, concurrent appenders from
several processes keeping one chain, and `argusnet audit list|verify` on the store the configuration names.

Tampering is done on the backend's own storage: lines of ``audit.jsonl`` for the local store, elements of the
``PREFIX:audit`` list (LSET, LREM, ...) for Redis, as an operator with access to either could."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import redis

from identity.merges import merge_visitor
from shared.errors import StoreError
from store import open_store, opened_audit
from store.audit import ALTERED, GENESIS, REORDERED, TRUNCATED, canonical, record_hash
from store.config import GalleryConfig
from store.local.audit import AUDIT_FILE, SUBJECTS_FILE
from store.redis.keys import StoreKeys
from tests.test_store_contract import DIM, MODEL, backend, face, opener, store_config, unit  # noqa: F401


class RawLog:
    """The stored records of one backend's audit log, read and rewritten behind its back."""

    def __init__(self, backend: str, where: Path) -> None:
        self.cfg = store_config(backend, where)
        self.backend = backend

    def _client(self) -> redis.Redis:
        return redis.Redis.from_url(self.cfg.url)

    def read(self) -> list[bytes]:
        if self.backend == "local":
            return (self.cfg.directory() / AUDIT_FILE).read_bytes().splitlines()
        with self._client() as r:
            return r.lrange(StoreKeys(self.cfg.prefix).audit, 0, -1)

    def write(self, records: list[bytes]) -> None:
        if self.backend == "local":
            (self.cfg.directory() / AUDIT_FILE).write_bytes(b"".join(r + b"\n" for r in records))
            return
        key = StoreKeys(self.cfg.prefix).audit
        with self._client() as r:
            r.delete(key)
            if records:
                r.rpush(key, *records)

    def cut_last(self, keep: int) -> None:
        """The last record cut short after ``keep`` bytes (a disk that filled up, a write torn mid-record)."""
        records = self.read()
        if self.backend == "local":
            path = self.cfg.directory() / AUDIT_FILE
            path.write_bytes(b"".join(r + b"\n" for r in records[:-1]) + records[-1][:keep])
        else:
            self.write(records[:-1] + [records[-1][:keep]])

    def subjects_bytes(self) -> bytes:
        if self.backend == "local":
            path = self.cfg.directory() / SUBJECTS_FILE
            return path.read_bytes() if path.exists() else b""
        with self._client() as r:
            return b"".join(k + v for k, v in r.hgetall(StoreKeys(self.cfg.prefix).audit_subjects).items())


@pytest.fixture
def raw(backend, tmp_path) -> RawLog:
    return RawLog(backend, tmp_path)


def filled(opener, n: int = 6):
    store = opener()
    for i in range(n):
        store.audit.append(actor="cli:tester", action="enrol", subject=f"person-{i % 3}", details={"faces": i})
    return store


def test_appends_make_one_verified_chain_with_pseudonymous_subjects(opener, raw):
    store = filled(opener)
    report = store.audit.verify()
    assert report.ok and report.records == 6
    records = store.audit.list()
    assert [r.seq for r in records] == list(range(1, 7))
    assert [r.subject for r in records] == [f"person-{i % 3}" for i in range(6)]
    assert len({r.subject_id for r in records}) == 3 and all(r.subject_id.startswith("s-") for r in records)
    assert all(r.prev == before.hash for before, r in zip(records, records[1:]))
    assert not any(b"person-" in record for record in raw.read())  # names live only in the subject mapping


def test_forget_lets_go_of_the_name_and_keeps_the_chain(opener, raw):
    store = filled(opener)
    assert b"person-1" in raw.subjects_bytes()
    assert store.audit.forget_subject("person-1", actor="cli:dpo") is True
    assert b"person-1" not in raw.subjects_bytes()
    assert not any(b"person-1" in record for record in raw.read())
    records = store.audit.list()
    assert store.audit.verify().ok and len(records) == 7
    assert records[-1].action == "forget" and records[-1].subject is None and records[-1].actor == "cli:dpo"
    assert records[-1].subject_id == records[1].subject_id and records[1].subject is None  # no longer leads to it
    assert store.audit.forget_subject("never-named") is False  # still recorded, with no subject
    assert store.audit.list()[-1].subject_id is None


@pytest.mark.parametrize("damage", ["edit", "delete", "swap"])
def test_tampering_is_found_at_the_first_bad_record(opener, raw, damage):
    store = filled(opener)
    records = raw.read()
    if damage == "edit":
        records[2] = records[2].replace(b'"faces":2', b'"faces":9')
        expected = (3, ALTERED)
    elif damage == "delete":
        del records[3]
        expected = (4, REORDERED)
    else:
        records[1], records[2] = records[2], records[1]
        expected = (2, REORDERED)
    raw.write(records)
    report = store.audit.verify()
    assert not report.ok and (report.first_bad_line, report.reason) == expected


def test_a_truncated_last_record_is_found_and_nothing_is_chained_to_it(opener, raw):
    store = filled(opener)
    raw.cut_last(40)
    report = store.audit.verify()
    assert not report.ok and report.first_bad_line == 6 and report.reason == TRUNCATED
    with pytest.raises(StoreError, match="damaged record"):
        store.audit.append(actor="cli:tester", action="remove", subject="person-0")
    assert len(raw.read()) == 6


def test_a_workers_automatic_merge_is_audited(opener):
    store = opener()
    rng = np.random.default_rng(3)
    v = unit(rng)[0]
    store.persons.add_person("Grace", [face(v)])
    visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.99, 5).visitor
    merge_visitor(store, visitor, "Grace", actor="worker:w1")
    record = store.audit.list()[-1]
    assert (record.action, record.actor, record.subject) == ("merge", "worker:w1", "Grace")
    assert record.details["visitor"] == visitor and store.audit.verify().ok


def test_opened_audit_is_none_before_the_store_exists_and_the_same_log_after(backend, tmp_path):
    cfg = store_config(backend, tmp_path)
    with opened_audit(cfg) as trail:
        assert trail is None
    with open_store(cfg, GalleryConfig(), MODEL, DIM, create=True) as store:
        store.audit.append(actor="cli:tester", action="user_add", details={"user": "ann"})
    with opened_audit(cfg) as trail:
        assert [r.details for r in trail.list()] == [{"user": "ann"}]


def _append_many(backend: str, where: str, who: str, n: int) -> None:
    with opened_audit(store_config(backend, Path(where))) as trail:
        for i in range(n):
            trail.append(actor=f"cli:{who}", action="enrol", subject=f"{who}-{i % 5}", details={"i": i})


def test_processes_appending_at_once_keep_one_chain(backend, tmp_path, opener):
    opener().close()
    ctx = multiprocessing.get_context("spawn")
    env_url = os.environ.get("ARGUSNET_TEST_REDIS_URL")
    assert backend == "local" or env_url  # the children find the same Redis store through the same variable
    procs = [ctx.Process(target=_append_many, args=(backend, str(tmp_path), who, 40)) for who in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with opened_audit(store_config(backend, tmp_path)) as trail:
        records = trail.list()
        assert trail.verify().ok
    assert [r.seq for r in records] == list(range(1, 81))
    assert sum(r.actor == "cli:p1" for r in records) == 40


def _store_env(backend: str, tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    cfg = store_config(backend, tmp_path)
    if backend == "local":
        return ["--gallery", str(cfg.directory())], {}
    return [], {"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": cfg.url,
                "ARGUSNET__STORE__PREFIX": cfg.prefix}


def test_the_cli_lists_and_verifies_either_backend(opener, raw, backend, tmp_path, cli):
    filled(opener).close()
    args, env = _store_env(backend, tmp_path)
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 0 and "intact: 6 record(s)" in result.out, result.err
    result = cli("audit", "list", "--json", *args, env=env)
    assert result.code == 0 and json.loads(result.out)["records"][0]["subject"] == "person-0"
    records = raw.read()
    raw.write(records[:2] + records[3:])
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 1 and "NOT intact: line 3 (seq 4): removed or reordered" in result.out, result.out


# ------------------------------------------------------------------------------------------------ the audit key
def _rehashed(records: list[bytes], start: int, edit) -> list[bytes]:
    """``records`` with the one at ``start`` edited by ``edit`` and every hash from there on recomputed as plain
    SHA-256, its ``key`` dropped: what an attacker who can write the log but lacks the audit key can do."""
    out = records[:start]
    prev = json.loads(out[-1])["hash"] if out else GENESIS
    for i, raw in enumerate(records[start:]):
        record = {k: v for k, v in json.loads(raw).items() if k not in ("hash", "key")}
        if i == 0:
            edit(record)
        record["prev"] = prev
        record["hash"] = prev = record_hash(record)
        out.append(canonical(record))
    return out


def _keygen(cli, path: Path) -> Path:
    result = cli("store", "keygen", path)
    assert result.code == 0 and path.stat().st_mode & 0o777 == 0o600, result
    assert len(bytes.fromhex(path.read_text().strip())) == 32
    return path


def _cli_store(backend: str, tmp_path: Path, key: Path | None) -> tuple[list[str], dict[str, str]]:
    args, env = _store_env(backend, tmp_path)
    return args, {**env, **({"ARGUSNET__STORE__AUDIT_KEY_FILE": str(key)} if key else {})}


def test_a_keyed_chain_rewritten_with_recomputed_hashes_fails_verify(backend, raw, tmp_path, cli):
    """With store.audit_key_file each record's hash is an HMAC: a log rewritten from its third record on, every
    plain hash recomputed (and every key id kept or dropped), fails `audit verify`; so does a keyed log checked
    without its key, and a log whose whole chain was rewritten as plain records."""
    (tmp_path / "secrets").mkdir()
    key = _keygen(cli, tmp_path / "secrets" / "audit.key")
    cfg = store_config(backend, tmp_path).model_copy(update={"audit_key_file": key})
    with open_store(cfg, GalleryConfig(), MODEL, DIM, create=True) as store:
        for i in range(6):
            store.audit.append(actor="cli:tester", action="enrol", subject=f"person-{i % 3}", details={"faces": i})
        report = store.audit.verify()
        assert report.ok and report.keyed == 6 and report.key_set
    args, env = _cli_store(backend, tmp_path, key)
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 0 and "every record keyed" in result.out, result
    original = raw.read()
    assert all(json.loads(r)["key"] == json.loads(original[0])["key"] for r in original)

    def forge(record: dict) -> None:
        record["actor"] = "cli:mallory"

    stripped = _rehashed(original, 2, forge)
    kept_key = [canonical({**json.loads(r), "key": json.loads(original[0])["key"]}) for r in stripped]
    for forged, expected in ((stripped, "line 3 (seq 3): not keyed, after keyed records"),
                             (kept_key, "line 3 (seq 3): altered"),
                             (_rehashed(original, 0, forge), "line 1 (seq 1): no record is keyed")):
        raw.write(forged)
        result = cli("audit", "verify", *args, env=env)
        assert result.code == 1 and expected in result.out and "Traceback" not in result.err, (expected, result)
    raw.write(original)
    args, env = _cli_store(backend, tmp_path, None)
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 1 and "line 1 (seq 1): keyed: set store.audit_key_file" in result.out, result


def test_an_unkeyed_chain_verifies_and_says_it_is_unkeyed_then_a_key_protects_what_follows(backend, raw, tmp_path,
                                                                                           cli):
    filled(lambda: open_store(store_config(backend, tmp_path), GalleryConfig(), MODEL, DIM, create=True), 3).close()
    args, env = _cli_store(backend, tmp_path, None)
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 0 and "intact: 3 record(s)" in result.out and "NOT keyed" in result.out, result
    key = _keygen(cli, tmp_path / "audit.key")
    cfg = store_config(backend, tmp_path).model_copy(update={"audit_key_file": key})
    with open_store(cfg, GalleryConfig(), MODEL, DIM) as store:
        store.audit.append(actor="cli:tester", action="remove", subject="person-0")
    args, env = _cli_store(backend, tmp_path, key)
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 0 and "1 record(s) keyed" in result.out and "the first 3 were written before" in result.out
    original = raw.read()
    forged = _rehashed(original, 1, lambda record: record.update(actor="cli:mallory"))  # in the plain part
    raw.write(forged)  # the keyed record lost its key with the rest
    result = cli("audit", "verify", *args, env=env)
    assert result.code == 1 and "line 1 (seq 1): no record is keyed" in result.out, result
    raw.write(forged[:3] + [canonical({**json.loads(forged[3]), "key": json.loads(original[3])["key"]})])
    result = cli("audit", "verify", *args, env=env)  # or it kept its key: its HMAC no longer fits
    assert result.code == 1 and "line 4 (seq 4): altered" in result.out, result


def test_an_audit_key_inside_the_local_store_is_refused(tmp_path, cli):
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    key = _keygen(cli, store_dir / "audit.key")
    result = cli("audit", "verify", "--gallery", store_dir, env={"ARGUSNET__STORE__AUDIT_KEY_FILE": str(key)})
    assert result.code == 2 and "keep the audit key apart from the store" in result.err
    assert "Traceback" not in result.err
