"""The store against hostile input and real faults (issue 24): the one person-name rule in enrolment, the
dashboard's actions and the store itself; `forget` on a Redis server that keeps an append-only file, with events an
operator withdrew ("not this person"), searching every byte of every key and of the server's files afterwards.
Real redis-servers (tests/redis_server.py), the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from identity.erasure import forget
from identity.merges import promote_visitor
from redis_server import start_redis
from shared.errors import EXIT_BAD_INPUT, EXIT_FAILURE, NameRuleError
from shared.names import MAX_PERSON_NAME_LEN, check_person_name
from shared.protocol import TrackEvent
from store.types import EventQuery, EventRecord
from test_forget import NAME, _dumps, _seeded_redis_store, holders
from test_store_contract import backend, face, opener, unit  # noqa: F401 - the backend fixtures

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
