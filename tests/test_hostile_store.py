"""The store against hostile input and real faults (issue 24): the one person-name rule in enrolment, the
dashboard's actions and the store itself; `forget` on a Redis server that keeps an append-only file, with events an
operator withdrew ("not this person"), searching every byte of every key and of the server's files afterwards.
Real redis-servers (tests/redis_server.py), the real CLI in a subprocess."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from identity.erasure import forget
from identity.merges import promote_visitor
from conftest import REPO
from processes import wait_until
from redis_server import start_redis
from shared import metrics as m
from shared.errors import EXIT_BAD_INPUT, EXIT_FAILURE, NameRuleError, StoreFaultError
from shared.names import MAX_PERSON_NAME_LEN, check_person_name
from shared.protocol import TrackEvent
from store import open_store
from store.buffered import MAX_WRITE_FAILURES, READ_OPERATIONS, BufferedStore
from store.config import GalleryConfig, LocalStoreConfig, RedisStoreConfig
from store.local.media import CROPS_DIR
from store.types import EventQuery, EventRecord, LiveTrack
from test_forget import NAME, _dumps, _seeded_redis_store, holders
from test_store_contract import DIM, MODEL, backend, event, face, opener, unit  # noqa: F401 - backend fixtures
from test_store_outage import sample

BAD_NAMES = {"tab": "Ada\tLovelace", "zero-width space": "Ada\u200bLovelace", "newline": "Ada\nLovelace",
             "right-to-left override": "Ada\u202eecalevoL", "line separator": "Ada\u2028L", "visitor id": "visitor-7",
             "visitor id in capitals": "Visitor-7", "leading space": " Ada", "trailing space": "Ada ",
             "empty": "", "too long": "A" * (MAX_PERSON_NAME_LEN + 1), "private use": "Ada\ue000"}
GOOD_NAMES = ["Ada Lovelace", "José María O'Neil-Smith", "李小龍", "Zoë (front desk)", "visitor", "visitor-seven",
              "A" * MAX_PERSON_NAME_LEN]


# ------------------------------------------------------------------------------------------------ the name rule
@pytest.mark.parametrize("label", sorted(BAD_NAMES))
def test_the_name_rule_refuses_saying_why(label):
    with pytest.raises(NameRuleError, match="is not a valid person's name"):
        check_person_name(BAD_NAMES[label])


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_the_name_rule_accepts_real_names(name):
    assert check_person_name(name) == name


def test_both_stores_refuse_a_bad_name_and_keep_the_good_ones(opener):
    store = opener()
    rng = np.random.default_rng(3)
    for name in BAD_NAMES.values():
        with pytest.raises(NameRuleError):
            store.persons.add_person(name, [face(unit(rng)[0])])
    store.persons.add_person("Ada Lovelace", [face(unit(rng)[0])])
    assert [p.name for p in store.persons.persons()] == ["Ada Lovelace"]


def test_a_name_stored_before_the_rule_is_never_named_and_fails_no_batch(tmp_path, caplog):
    """A gallery written before the name rule may hold 'Eve\tSmith'; such a name cannot travel in an event (the
    wire refuses it) and used to fail every worker batch in which that person was in view. The worker's store leaves
    such persons out of its search results, counted and logged once; valid persons are found as before."""
    rng = np.random.default_rng(11)
    vectors = unit(rng, 2)
    inner = open_store(LocalStoreConfig(path=tmp_path / "g"), GalleryConfig(), MODEL, DIM, create=True)
    inner.persons._add_faces("Eve\tSmith", [face(vectors[0])])  # as a store written before the rule holds it
    inner.persons.add_person("Ada Lovelace", [face(vectors[1])])
    registry = CollectorRegistry()
    store = BufferedStore(inner, registry)
    try:
        with caplog.at_level("WARNING", logger="store.buffered"):
            for _ in range(3):
                rows = store.persons.search(vectors, 2)
                assert [[hit.name for hit in row] for row in rows] == [["Ada Lovelace"], ["Ada Lovelace"]]
        assert sample(registry, m.STORE_NAMES_REFUSED) == 1
        assert len([r for r in caplog.records if "never named" in r.getMessage()]) == 1
    finally:
        store.close()


def test_a_visitor_cannot_be_named_with_a_bad_name(opener):
    store = opener()
    rng = np.random.default_rng(4)
    visitor = store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5).visitor
    for name in (BAD_NAMES["zero-width space"], "visitor-99", BAD_NAMES["tab"]):
        with pytest.raises(NameRuleError):
            promote_visitor(store, visitor, name)
    assert store.persons.persons() == []


@pytest.mark.parametrize("label", ["tab", "zero-width space", "visitor id"])
def test_enroll_refuses_a_bad_name_before_any_photo_work(cli, tmp_path, label):
    photo = tmp_path / "photo.png"  # never read: the name is refused first
    result = cli("enroll", BAD_NAMES[label], photo, "--gallery", tmp_path / "store")
    assert result.code == EXIT_BAD_INPUT, result
    assert "is not a valid person's name" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------------------------------------ forget on Redis
AOF = ("--appendonly", "yes", "--appendfsync", "always", "--aof-use-rdb-preamble", "no")


def _server_files(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _withdraw_another_track(store) -> None:
    """A second track, first named NAME, then "not this person": its stream entries still carry the name today."""
    events = [TrackEvent(type=kind, camera="cam2", track=8, name=NAME, similarity=0.8, margin=None, ts=7.0 + i,
                         capture_ts=7.0 + i, box=None, time_to_name_ms=None, duration_s=float(i), visitor=False)
              for i, kind in enumerate(("track_identified", "track_ended"))]
    store.events.append([EventRecord(e) for e in events])
    assert store.events.unname_track("cam2", 8, NAME) == 2


def test_forget_on_redis_with_its_aof_leaves_no_byte_in_keys_withdrawn_events_or_files(tmp_path):
    server = start_redis(tmp_path, *AOF)
    try:
        prefix = "h" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
        store, needles = _seeded_redis_store(server.url, prefix)
        with store:
            _withdraw_another_track(store)
            assert set(holders(_server_files(tmp_path), needles)) == set(needles)
            report = forget(store, NAME)
            assert report.left == (), report.left
            withdrawn = store.events.query(EventQuery(camera="cam2"))
            assert [(e.event.type, e.event.name) for e in withdrawn] == [("track_ended", None)]  # kept, un-named
        assert holders(_dumps(server.url, prefix), needles) == {}
        assert holders(_server_files(tmp_path), needles) == {}
    finally:
        server.stop()


def test_forget_exits_1_naming_the_aof_when_the_server_refuses_to_rewrite_it(cli, tmp_path):
    server = start_redis(tmp_path, *AOF, "--rename-command", "BGREWRITEAOF", "")
    try:
        prefix = "r" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
        store, needles = _seeded_redis_store(server.url, prefix)
        store.close()
        env = {"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": server.url,
               "ARGUSNET__STORE__PREFIX": prefix}
        result = cli("forget", NAME, env=env)
        assert result.code == EXIT_FAILURE, result
        assert "NOT erased" in result.out and "append-only file (AOF) still holds the erased data" in result.out
        assert "BGREWRITEAOF" in result.out and "Traceback" not in result.err
        assert holders(_dumps(server.url, prefix), needles) == {}  # what Redis holds in memory went all the same
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------------ faults
def _filled(directory: Path) -> Path:
    """Fill the file system ``directory`` is on: a filler file written until ENOSPC."""
    filler = directory / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs), unmounted at the end. Mounting needs root, as CI runs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root (CI runs as root)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _records(first: int, n: int) -> list[EventRecord]:
    return [EventRecord(event("track_started", "cam", track, float(track)), worker="w" * 2000)  # fills pages
            for track in range(first, first + n)]


def _flush_all(store: BufferedStore) -> bool:
    store.flush()
    return sum(store.pending().values()) == 0


def test_a_full_disk_buffers_the_workers_writes_and_loses_none(small_disk):
    registry = CollectorRegistry()
    with BufferedStore(open_store(LocalStoreConfig(path=small_disk / "store"), GalleryConfig(), MODEL, DIM,
                                  create=True), registry) as store:
        assert len(store.events.append(_records(0, 5))) == 5
        filler = _filled(small_disk)
        for first in range(5, 205, 20):  # each call returns (no OSError, no sqlite3 error); what fails waits
            store.events.append(_records(first, 20))
            assert store.media.put_crop("cam", first, np.full((64, 64, 3), 7, np.uint8)) == f"cam/{first}"
            store.live.put(LiveTrack("cam", first, None, False, None, None, 1.0, 1.0), 60.0)
        for _ in range(2 * MAX_WRITE_FAILURES):  # a flush while the disk is still bad gives nothing up
            store.flush()
        assert store.pending()["events"] > 0 and store.pending()["crops"] > 0
        assert all(sample(registry, m.STORE_DROPPED, kind=kind) == 0 for kind in m.STORE_BUFFER_KINDS)
        assert sample(registry, m.STORE_ERRORS, operation="append_events") >= 1
        filler.unlink()
        assert wait_until(lambda: _flush_all(store), timeout=30.0), store.pending()
        logged = store.events.query(EventQuery(limit=1000, oldest_first=True))
        assert [e.event.track for e in logged] == list(range(205))  # every event, in order
        assert store.media.get_crop("cam/185")[:3] == b"\xff\xd8\xff"
        assert all(sample(registry, m.STORE_DROPPED, kind=kind) == 0 for kind in m.STORE_BUFFER_KINDS)


def test_a_fault_of_the_disk_is_a_store_fault_error_never_a_raw_os_error(small_disk):
    with BufferedStore(open_store(LocalStoreConfig(path=small_disk / "store"), GalleryConfig(), MODEL, DIM,
                                  create=True)) as store:
        _filled(small_disk)
        with pytest.raises(StoreFaultError, match="disk is full"):  # the backend itself, as the CLI sees it
            for first in range(0, 400, 20):
                store.inner.events.append(_records(first, 20))
        with pytest.raises(StoreFaultError, match="writing a crop failed, the disk is full"):
            store.inner.media.put_crop("cam", 1, np.full((64, 64, 3), 7, np.uint8))


def test_a_read_only_file_system_under_the_stores_crops_is_a_fault_the_worker_waits_out(small_disk):
    """The crops folder of a local store on a file system mounted read-only (EROFS from the kernel on each write),
    then read-write again: the crops wait, nothing raises, nothing is dropped."""
    registry = CollectorRegistry()
    with BufferedStore(open_store(LocalStoreConfig(path=small_disk.parent / "store"), GalleryConfig(), MODEL, DIM,
                                  create=True), registry) as store:
        crops = small_disk.parent / "store" / CROPS_DIR
        crops.mkdir(exist_ok=True)
        subprocess.run(["mount", "--bind", str(small_disk), str(crops)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(crops)], check=True)
            for track in range(3):
                assert store.media.put_crop("cam", track, np.full((8, 8, 3), 7, np.uint8)) == f"cam/{track}"
            for _ in range(2 * MAX_WRITE_FAILURES):
                store.flush()
            assert store.pending()["crops"] == 3 and store.availability.down_since is not None
            subprocess.run(["mount", "-o", "remount,bind,rw", str(crops)], check=True)
            assert wait_until(lambda: _flush_all(store), timeout=30.0), store.pending()
            assert store.media.get_crop("cam/2")[:3] == b"\xff\xd8\xff"
            assert sample(registry, m.STORE_DROPPED, kind="crops") == 0
        finally:
            subprocess.run(["umount", "-l", str(crops)], check=True)


def test_a_hung_redis_costs_a_worker_call_at_most_its_short_timeout_and_loses_nothing(tmp_path):
    server = start_redis(tmp_path)
    cfg = RedisStoreConfig(url=server.url, worker_socket_timeout_s=0.3).for_worker()
    assert cfg.socket_timeout_s == 0.3
    registry = CollectorRegistry()
    store = BufferedStore(open_store(cfg, GalleryConfig(), MODEL, DIM, create=True), registry)
    try:
        store.events.append(_records(0, 1))
        server.process.send_signal(signal.SIGSTOP)  # a stuck server: connections open, no answer
        slowest = 0.0
        for first in range(1, 41):
            started = time.monotonic()
            store.events.append(_records(first, 1))
            store.live.put(LiveTrack("cam", first, None, False, None, None, 1.0, 1.0), 60.0)
            slowest = max(slowest, time.monotonic() - started)
        assert slowest < 0.3 + 0.5, slowest  # far below the worker's 2 s stale limit
        assert store.pending()["events"] == 40
        server.process.send_signal(signal.SIGCONT)
        assert wait_until(lambda: _flush_all(store), timeout=30.0), store.pending()
        tracks = [e.event.track for e in store.events.query(EventQuery(limit=100, oldest_first=True))]
        # nothing lost, in order, and nothing twice: the append that timed out while the server was stopped ran on
        # it after SIGCONT and was retried, and the retry got that append's ids back (an idempotent append)
        assert tracks == list(range(41)), tracks
        assert sample(registry, m.STORE_DROPPED, kind="events") == 0
    finally:
        server.process.send_signal(signal.SIGCONT)
        store.close()
        server.stop()


def test_reads_that_work_on_a_full_disk_do_not_end_the_outage_its_writes_are_in(small_disk, caplog):
    """A full disk fails the worker's writes while its reads (a replica sync) go on working: the store stays
    unavailable until a write succeeds again, said once each way (`argusnet bench faults` found the worker's log
    saying "unavailable" and "available again" twice a second for as long as the disk was full)."""
    assert READ_OPERATIONS <= set(m.STORE_OPERATIONS)
    registry = CollectorRegistry()
    with BufferedStore(open_store(LocalStoreConfig(path=small_disk / "store"), GalleryConfig(), MODEL, DIM,
                                  create=True), registry) as store:
        filler = _filled(small_disk)
        crop = np.full((64, 64, 3), 7, np.uint8)
        store.media.put_crop("cam", 1, crop)  # fails: waits
        for _ in range(3):
            assert wait_until(store.availability.allows, timeout=30.0)
            store.persons.sync()  # a read: it works on a full disk
            store.flush()  # the crop fails again
        said = [r.getMessage() for r in caplog.records if r.name == "store.buffered"]
        assert sum("is unavailable" in s for s in said) == 1 and not any("available again" in s for s in said), said
        assert store.pending()["crops"] == 1 and store.availability.down_since is not None
        assert sample(registry, m.STORE_ERRORS, operation="put_crop") == 4  # the delay grew: 0.5, 1, 2 s
        filler.unlink()
        assert wait_until(lambda: _flush_all(store), timeout=30.0), store.pending()
        said = [r.getMessage() for r in caplog.records if r.name == "store.buffered"]
        assert sum("available again" in s for s in said) == 1 and store.availability.down_since is None, said
        assert store.media.get_crop("cam/1")[:3] == b"\xff\xd8\xff"


# ------------------------------------------------------------------------------------------------ reading a full disk
def _site_on(disk: Path, held_open: bool):
    """A local store on ``disk`` with Ada enrolled, an event, a visitor and an audit record; then the disk filled.
    ``held_open``: a worker still has the store open (its SQLite shared-memory files are there) and the index files
    are stale (a reading command rebuilds them and cannot write them); else the store was closed cleanly (no
    shared-memory file: SQLite cannot make one to read it)."""
    rng = np.random.default_rng(11)
    store = open_store(LocalStoreConfig(path=disk / "store"), GalleryConfig(), MODEL, DIM, create=True)
    store.persons.add_person("Ada Lovelace", [face(unit(rng)[0])])
    store.visitors.match_or_create([face(unit(rng)[0])], 0.9, 5)
    store.events.append([EventRecord(event("track_identified", "cam", 1, 1.0, "Ada Lovelace"))])
    store.audit.append(actor="cli:tester", action="enrol", subject="Ada Lovelace")
    if not held_open:
        store.close()
    for index in (disk / "store").rglob("index.json"):
        index.unlink()  # stale: rebuilt from SQLite by whoever opens the gallery next
    filler = _filled(disk)
    return store, filler


def _events_from_store(cli_args: list[str], out: Path) -> subprocess.CompletedProcess:
    """`argusnet events --from-store` (it polls for ever) until it printed the stored event, then interrupted."""
    with open(out, "w") as stdout, subprocess.Popen(
            [sys.executable, "-m", "argusnet", "events", "--from-store", *cli_args], stdout=stdout,
            stderr=subprocess.PIPE, text=True, cwd=REPO) as proc:
        shown = wait_until(lambda: "identified: Ada Lovelace" in out.read_text() or proc.poll() is not None,
                           timeout=60.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert shown and "identified: Ada Lovelace" in out.read_text(), (out.read_text(), err)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err)


@pytest.mark.parametrize("held_open", [True, False], ids=["worker-running", "store-closed"])
def test_read_only_commands_work_on_a_full_disk(small_disk, cli, tmp_path, held_open):
    store, _ = _site_on(small_disk, held_open)
    try:
        args = ["--gallery", str(small_disk / "store")]
        for command, shows in ((("gallery", "list"), "Ada Lovelace"), (("visitors", "list"), "1 visitor(s)"),
                               (("audit", "verify"), "intact: 1 record(s)"), (("audit", "list"), "enrol")):
            result = cli(*command, *args)
            assert result.code == 0 and shows in result.out, (command, result)
            assert "Traceback" not in result.err, (command, result.err)
        done = _events_from_store(args, tmp_path / "events.out")
        assert "Traceback" not in done.stderr, done.stderr
    finally:
        if held_open:
            store.close()


# ------------------------------------------------------------------------------------------------ forget: event files
def test_forget_rewrites_the_event_files_the_site_config_names(cli, tmp_path):
    """`argusnet events --from-store --jsonl` (the real process) writes the site's events file; store.event_files
    names it (and a second file not made yet); forget rewrites it without Ada's lines, keeps Grace's and its mode,
    and reports each file."""
    directory = tmp_path / "store"
    rng = np.random.default_rng(5)
    with open_store(LocalStoreConfig(path=directory), GalleryConfig(), MODEL, DIM, create=True) as store:
        for track, name in enumerate(("Ada Lovelace", "Grace Hopper", "Ada Lovelace")):
            store.persons.add_person(name, [face(unit(rng)[0])]) if track < 2 else None
            store.events.append([EventRecord(event("track_identified", f"cam{track}", track, 1.0 + track, name))])
    jsonl, later = tmp_path / "site" / "events.jsonl", tmp_path / "site" / "later.jsonl"
    jsonl.parent.mkdir()
    _events_from_store(["--gallery", str(directory), "--jsonl", str(jsonl)], tmp_path / "events.out")
    assert wait_until(lambda: jsonl.exists() and jsonl.read_bytes().count(b"\n") == 3, timeout=30.0)
    jsonl.chmod(0o640)
    assert jsonl.read_bytes().count(b"Ada Lovelace") == 2
    config = tmp_path / "site.yaml"
    config.write_text(f"store:\n  type: local\n  path: {directory}\n  event_files: [{jsonl}, {later}]\n")
    result = cli("forget", "Ada Lovelace", "--config", config, "--json", tmp_path / "forget.json")
    assert result.code == 0, result
    assert f"events file {jsonl}: 2 line(s) removed, 1 kept" in result.out
    assert f"events file {later}: not there" in result.out
    assert b"Ada Lovelace" not in jsonl.read_bytes() and b"Grace Hopper" in jsonl.read_bytes()
    assert jsonl.stat().st_mode & 0o777 == 0o640
    files = json.loads((tmp_path / "forget.json").read_text())["event_files"]
    assert [(f["path"], f["removed"], f["missing"]) for f in files] == [(str(jsonl), 2, False), (str(later), 0, True)]
    again = cli("forget", "Ada Lovelace", "--config", config)  # nothing left anywhere: exit 2, as before
    assert again.code == EXIT_BAD_INPUT and "holds nothing of" in again.err


def test_forget_of_a_name_only_an_event_file_holds_still_erases_it(cli, tmp_path):
    directory = tmp_path / "store"
    open_store(LocalStoreConfig(path=directory), GalleryConfig(), MODEL, DIM, create=True).close()
    jsonl = tmp_path / "old.jsonl"
    jsonl.write_text(json.dumps(event("track_identified", "cam", 1, 1.0, "Ada Lovelace").to_json_dict()) + "\n"
                     + json.dumps({"note": "not json for Ada Lovelace"})[:-2] + "\n")
    config = tmp_path / "site.yaml"
    config.write_text(f"store:\n  type: local\n  path: {directory}\n  event_files: [{jsonl}]\n")
    result = cli("forget", "Ada Lovelace", "--config", config)
    assert result.code == 0 and "held nothing of Ada Lovelace" in result.out, result
    assert jsonl.read_bytes() == b""


# ------------------------------------------------------------------------------------------------ forget: buffers
def test_a_forgotten_name_is_never_written_back_from_a_workers_buffer(cli, tmp_path):
    """A worker buffers an event naming the person (with its crop), their live track and another person's event
    while Redis hangs; Redis comes back; `argusnet forget` (the real CLI) runs before the worker flushes; the
    flush then writes the other person's event and drops the rest (counted), and no key, AOF or snapshot holds
    the name or the crop."""
    server = start_redis(tmp_path, *AOF)
    prefix = "b" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    registry = CollectorRegistry()
    worker = None
    try:
        store, needles = _seeded_redis_store(server.url, prefix)
        store.close()
        cfg = RedisStoreConfig(url=server.url, prefix=prefix, worker_socket_timeout_s=0.3).for_worker()
        worker = BufferedStore(open_store(cfg, GalleryConfig(), "m", 32), registry)
        crop = np.random.default_rng(8).integers(0, 255, (40, 40, 3), np.uint8)
        server.process.send_signal(signal.SIGSTOP)
        key = worker.media.put_crop("cam", 7, crop)
        ended = TrackEvent(type="track_ended", camera="cam", track=7, name=NAME, similarity=0.9, margin=None,
                           ts=9.0, capture_ts=9.0, box=None, time_to_name_ms=None, duration_s=2.0, visitor=False)
        other = TrackEvent(type="track_identified", camera="cam2", track=8, name="Grace Hopper", similarity=0.9,
                           margin=None, ts=9.5, capture_ts=9.5, box=None, time_to_name_ms=None, duration_s=0.0,
                           visitor=False)
        worker.events.append([EventRecord(ended, crop=key), EventRecord(other)])
        worker.live.put(LiveTrack("cam", 7, NAME, False, 0.9, None, 1.0, 9.0, crop=key), 60.0)
        assert worker.pending()["events"] == 2 and worker.pending()["crops"] == 1, worker.pending()
        server.process.send_signal(signal.SIGCONT)
        env = {"ARGUSNET__STORE__TYPE": "redis", "ARGUSNET__STORE__URL": server.url, "ARGUSNET__STORE__PREFIX": prefix}
        forgot = cli("forget", NAME, env=env)
        assert forgot.code == 0, forgot
        assert wait_until(lambda: _flush_all(worker), timeout=30.0), worker.pending()
        logged = worker.events.query(EventQuery(limit=100))
        assert [e.event.name for e in logged if e.event.name] == ["Grace Hopper"], logged
        assert sample(registry, m.STORE_ERASED_WRITES, kind="events") == 1
        assert sample(registry, m.STORE_ERASED_WRITES, kind="crops") == 1
        assert sample(registry, m.STORE_ERASED_WRITES, kind="live_tracks") == 1
        with pytest.raises(KeyError):
            worker.media.get_crop(key)
        assert holders(_dumps(server.url, prefix), needles) == {}
        assert holders(_server_files(tmp_path), needles) == {}  # the AOF the forget rewrote, and what came after
    finally:
        server.process.send_signal(signal.SIGCONT)
        if worker is not None:
            worker.close()
        server.stop()


def test_both_stores_keep_erasure_tombstones_without_the_name(opener, backend, tmp_path):
    store = opener()
    assert store.erased(["Ada Lovelace"]) == {}  # no forget yet: no salt, no tombstone
    before = time.time()
    store.record_erasure("Ada Lovelace")
    erased = store.erased(["Ada Lovelace", "Grace Hopper"])
    assert list(erased) == ["Ada Lovelace"] and before <= erased["Ada Lovelace"] <= time.time()
    if backend == "local":
        data = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
        assert b"Ada Lovelace" not in data
