"""The tamper-evident audit log (store/audit.py) on real files, and `argusnet audit list|verify` run for real."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from store.audit import ACTIONS, GENESIS, default_actor
from store.local.audit import AUDIT_FILE, SUBJECTS_FILE
from store.local.audit import FileAuditLog as AuditLog

NAMES = ("alice", "bob", "carol", "dave", "erin")


def build_log(directory: Path, n: int = 6) -> AuditLog:
    audit = AuditLog(directory)
    for i in range(n):
        audit.append(actor="cli:tester", action=ACTIONS[i % 4], subject=NAMES[i % len(NAMES)], details={"i": i})
    return audit


def lines_of(directory: Path) -> list[bytes]:
    return (directory / AUDIT_FILE).read_bytes().splitlines(keepends=True)


def write_lines(directory: Path, lines: list[bytes]) -> None:
    (directory / AUDIT_FILE).write_bytes(b"".join(lines))


def test_a_chain_of_appends_verifies(tmp_path, cli):
    audit = build_log(tmp_path)
    report = audit.verify()
    assert report.ok and report.records == 6 and report.reason is None
    records = audit.list()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[0].prev == GENESIS and all(b.prev == a.hash for a, b in zip(records, records[1:]))
    assert [r.subject for r in records] == [NAMES[i % 5] for i in range(6)]
    assert records[0].subject_id == records[5].subject_id and records[0].subject_id.startswith("s-")
    result = cli("audit", "verify", "--gallery", tmp_path)
    assert result.code == 0, result.err
    assert "intact: 6 record(s)" in result.out
    listed = cli("audit", "list", "--json", "--gallery", tmp_path)
    assert listed.code == 0, listed.err
    rows = json.loads(listed.out)["records"]
    assert [r["subject"] for r in rows] == [r.subject for r in records] and rows[2]["details"] == {"i": 2}
    text = cli("audit", "list", "--gallery", tmp_path)
    assert text.code == 0 and "6 audit record(s)" in text.out and "alice" in text.out


def test_names_never_reach_the_log_file(tmp_path):
    build_log(tmp_path)
    data = (tmp_path / AUDIT_FILE).read_bytes()
    assert all(name.encode() not in data for name in NAMES)
    assert json.loads(lines_of(tmp_path)[0])["subject"].startswith("s-")


def test_an_empty_or_missing_log_verifies(tmp_path, cli):
    assert AuditLog(tmp_path).verify().ok and AuditLog(tmp_path).list() == []
    result = cli("audit", "verify", "--gallery", tmp_path)
    assert result.code == 0 and "0 record(s)" in result.out
    (tmp_path / AUDIT_FILE).write_bytes(b"")
    assert AuditLog(tmp_path).verify().records == 0


def test_an_edited_field_is_altered(tmp_path, cli):
    build_log(tmp_path)
    lines = lines_of(tmp_path)
    record = json.loads(lines[2])
    record["actor"] = "cli:mallory"
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    write_lines(tmp_path, lines)
    report = AuditLog(tmp_path).verify()
    assert (report.ok, report.first_bad_line, report.first_bad_seq, report.reason) == (False, 3, 3, "altered")
    result = cli("audit", "verify", "--gallery", tmp_path)
    assert result.code == 1
    assert "line 3 (seq 3): altered" in result.out


def test_a_deleted_middle_line_is_found(tmp_path, cli):
    build_log(tmp_path)
    lines = lines_of(tmp_path)
    del lines[2]
    write_lines(tmp_path, lines)
    report = AuditLog(tmp_path).verify()
    assert (report.first_bad_line, report.first_bad_seq, report.reason) == (3, 4, "removed or reordered")
    result = cli("audit", "verify", "--gallery", tmp_path)
    assert result.code == 1 and "line 3 (seq 4): removed or reordered" in result.out


def test_swapped_lines_are_found(tmp_path):
    build_log(tmp_path)
    lines = lines_of(tmp_path)
    lines[1], lines[4] = lines[4], lines[1]
    write_lines(tmp_path, lines)
    report = AuditLog(tmp_path).verify()
    assert not report.ok and report.first_bad_line == 2 and report.reason == "removed or reordered"


def test_a_rehashed_edit_still_breaks_the_chain(tmp_path):
    """Recomputing the edited record's own hash does not help: the next record's prev no longer matches."""
    from store.audit import record_hash

    build_log(tmp_path)
    lines = lines_of(tmp_path)
    record = json.loads(lines[1])
    record["details"] = {"i": 99}
    record["hash"] = record_hash(record)
    lines[1] = json.dumps(record).encode() + b"\n"
    write_lines(tmp_path, lines)
    report = AuditLog(tmp_path).verify()
    assert (report.first_bad_line, report.reason) == (3, "removed or reordered")


@pytest.mark.parametrize("cut", ["mid_last_line", "mid_file", "newline_only"])
def test_a_truncated_file_is_found(tmp_path, cli, cut):
    build_log(tmp_path)
    path = tmp_path / AUDIT_FILE
    data = path.read_bytes()
    sizes = [len(line) for line in lines_of(tmp_path)]
    at = {"mid_last_line": len(data) - sizes[-1] // 2, "mid_file": sum(sizes[:3]) + sizes[3] // 2,
          "newline_only": len(data) - 1}[cut]
    path.write_bytes(data[:at])
    report = AuditLog(tmp_path).verify()
    line = 6 if cut != "mid_file" else 4
    assert (report.ok, report.first_bad_line, report.reason) == (False, line, "truncated")
    result = cli("audit", "verify", "--gallery", tmp_path)
    assert result.code == 1 and f"line {line}" in result.out and "truncated" in result.out


def test_nothing_is_chained_to_a_damaged_tail(tmp_path):
    from shared.errors import StoreError

    audit = build_log(tmp_path, 3)
    path = tmp_path / AUDIT_FILE
    path.write_bytes(path.read_bytes()[:-10])
    before = path.read_bytes()
    with pytest.raises(StoreError, match="damaged"):
        audit.append(actor="cli:t", action="enrol", subject="zed")
    assert path.read_bytes() == before


def test_forget_subject_erases_the_name_and_keeps_the_chain(tmp_path, cli):
    audit = build_log(tmp_path)
    assert audit.forget_subject("alice", actor="cli:dpo") is True
    assert audit.forget_subject("nobody", actor="cli:dpo") is False
    report = audit.verify()
    assert report.ok and report.records == 8
    for name in (AUDIT_FILE, SUBJECTS_FILE):
        assert b"alice" not in (tmp_path / name).read_bytes()
    assert b"bob" in (tmp_path / SUBJECTS_FILE).read_bytes()
    records = audit.list()
    assert records[0].subject is None and records[0].subject_id is not None
    assert records[6].action == "forget" and records[6].subject_id == records[0].subject_id
    assert records[1].subject == "bob"
    assert cli("audit", "verify", "--gallery", tmp_path).code == 0
    listed = cli("audit", "list", "--gallery", tmp_path)
    assert listed.code == 0 and "alice" not in listed.out
    # the name enrolled again gets a new id: nothing links it to the erased records
    again = audit.append(actor="cli:t", action="enrol", subject="alice")
    assert again.subject_id != records[0].subject_id and audit.list()[0].subject is None


def test_bad_arguments_are_refused(tmp_path):
    audit = AuditLog(tmp_path)
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.append(actor="cli:t", action="delete_everything", subject="x")
    with pytest.raises(ValueError, match="plain JSON"):
        audit.append(actor="cli:t", action="enrol", subject="x", details={"photo": object()})
    with pytest.raises(ValueError, match="actor"):
        audit.append(actor="", action="enrol")
    assert not (tmp_path / AUDIT_FILE).exists() or (tmp_path / AUDIT_FILE).read_bytes() == b""


def test_the_default_actor_is_the_cli_user(tmp_path, monkeypatch):
    import getpass
    import os

    record = AuditLog(tmp_path).append(action="login")
    assert record.actor == default_actor() and record.actor.startswith("cli:")

    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert AuditLog(tmp_path).append(action="login").actor == f"cli:uid{os.getuid()}"


def test_a_missing_store_is_bad_input(tmp_path, cli, redis_url):
    result = cli("audit", "verify", "--gallery", tmp_path / "absent")
    assert result.code == 2 and "no store at" in result.err and "Traceback" not in result.err
    result = cli("audit", "list", env={"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": redis_url,
                                       "ARGUSNET__STORE__PREFIX": "nostorehere"})
    assert result.code == 2 and "no store at" in result.err and "Traceback" not in result.err, result.err


def _append_many(directory: str, who: str, n: int) -> None:
    audit = AuditLog(directory)
    for i in range(n):
        audit.append(actor=f"cli:{who}", action="enrol", subject=f"{who}-{i % 7}", details={"i": i})


def test_two_processes_appending_at_once_keep_one_chain(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), who, 50)) for who in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    audit = AuditLog(tmp_path)
    report = audit.verify()
    assert report.ok and report.records == 100
    records = audit.list()
    assert [r.seq for r in records] == list(range(1, 101))
    assert sum(r.actor == "cli:p1" for r in records) == 50
    assert {r.subject for r in records} == {f"{w}-{i}" for w in ("p1", "p2") for i in range(7)}
