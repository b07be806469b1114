"""Tests of the msgpack wire protocol: round trips, strict rejection with the right reason and field, and
property tests that garbage only ever yields a valid message or a ProtocolError."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import ProtocolError
from shared.ids import ID_PATTERN
from shared.protocol import (
    _SCHEMAS,
    EVENT_TYPES,
    MAX_SEQ,
    REASONS,
    ROLES,
    SCHEMA_VERSION,
    Frame,
    Heartbeat,
    TrackEvent,
    decode,
    decode_as,
    encode,
)

LIMIT = 1 << 20
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GARBAGE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ strategies
ids = st.from_regex(ID_PATTERN, fullmatch=True)
texts = st.text(st.characters(categories=["L", "M", "N", "P", "S"], include_characters=" "), min_size=1,
                max_size=40)
times = st.floats(allow_nan=False, allow_infinity=False)
seqs = st.integers(0, MAX_SEQ)
sides = st.integers(1, 16384)
nonneg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)

frames = st.builds(Frame, camera_id=ids, seq=seqs, capture_ts=times, send_ts=times, width=sides, height=sides,
                   jpeg=st.binary(min_size=1, max_size=64))


@st.composite
def track_events(draw: st.DrawFn) -> TrackEvent:
    kind = draw(st.sampled_from(EVENT_TYPES))
    name = draw(texts) if kind == "track_identified" else draw(st.none() | texts)
    visitor = draw(st.booleans()) if name is not None else False
    box = draw(st.none() | st.tuples(times, times, times, times))
    merged = draw(st.none() | texts) if kind == "track_identified" and not visitor else None
    return TrackEvent(kind, draw(ids), draw(seqs), name, draw(st.none() | times), draw(st.none() | times),
                      draw(times), draw(times), box, draw(st.none() | nonneg), draw(st.none() | nonneg), visitor,
                      merged)


heartbeats = st.builds(Heartbeat, sender=ids, role=st.sampled_from(ROLES), seq=seqs, ts=times,
                       credits=st.integers(0, 2**31 - 1), cameras=st.lists(ids, max_size=5, unique=True).map(tuple))
messages = st.one_of(frames, track_events(), heartbeats)


def frame() -> Frame:
    return Frame("cam-1", 7, 1700000000.25, 1700000000.5, 640, 480, b"\xff\xd8\xff\xe0jpeg")


def event() -> TrackEvent:
    return TrackEvent("track_identified", "cam-1", 3, "alice", 0.91, 0.12, 1700000001.0, 1700000000.25,
                      (10.0, 20.0, 110.0, 140.0), 350.0, 1.5, False)


def merged() -> TrackEvent:
    """A visitor track recognised as an enrolled person."""
    return dataclasses.replace(event(), merged_visitor="visitor-3")


def heartbeat() -> Heartbeat:
    return Heartbeat("worker-0", "worker", 12, 1700000000.0, 4, ("cam-1", "cam-2"))


SAMPLES = [frame(), event(), merged(), heartbeat()]


def wire(msg: Any) -> dict[str, Any]:
    """The unpacked map of a valid message, to be tampered with."""
    return msgpack.unpackb(encode(msg), raw=False)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def reject(data: bytes, max_bytes: int = LIMIT) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data, max_bytes)
    assert info.value.reason in REASONS
    return info.value


def decode_or_error(data: bytes) -> None:
    """The garbage property: a valid message (which re-encodes to itself) or a ProtocolError, nothing else."""
    try:
        msg = decode(data, LIMIT)
    except ProtocolError as err:
        assert err.reason in REASONS
        return
    assert isinstance(msg, (Frame, TrackEvent, Heartbeat))
    assert decode(encode(msg), LIMIT) == msg


# ------------------------------------------------------------------------------------------------ round trips
@FAST
@given(frames)
def test_frame_round_trip(msg: Frame) -> None:
    assert decode_as(Frame, encode(msg), LIMIT) == msg


@FAST
@given(track_events())
def test_track_event_round_trip(msg: TrackEvent) -> None:
    assert decode_as(TrackEvent, encode(msg), LIMIT) == msg


@FAST
@given(heartbeats)
def test_heartbeat_round_trip(msg: Heartbeat) -> None:
    assert decode(encode(msg), LIMIT) == msg


def test_merged_visitor_round_trip() -> None:
    msg = merged()
    out = decode_as(TrackEvent, encode(msg), LIMIT)
    assert out == msg and out.merged_visitor == "visitor-3" and out.name == "alice" and not out.visitor
    assert decode(encode(event()), LIMIT).merged_visitor is None


def test_merged_visitor_defaults_to_none() -> None:
    positional = TrackEvent("track_ended", "c", 1, None, None, None, 1.0, 2.0, None, None, 3.0, False)
    keywords = TrackEvent(type="track_ended", camera="c", track=1, name=None, similarity=None, margin=None, ts=1.0,
                          capture_ts=2.0, box=None, time_to_name_ms=None, duration_s=3.0, visitor=False)
    assert positional == keywords and positional.merged_visitor is None
    assert wire(positional)["merged_visitor"] is None  # present on the wire, as nil


def test_envelope_and_types_on_the_wire() -> None:
    assert SCHEMA_VERSION == 5
    body = wire(merged())
    assert body["v"] == SCHEMA_VERSION and body["t"] == "track_event"
    assert body["box"] == [10.0, 20.0, 110.0, 140.0] and body["merged_visitor"] == "visitor-3"
    assert list(body) == ["v", "t"] + [f.name for f in dataclasses.fields(TrackEvent)]
    assert wire(frame())["jpeg"] == frame().jpeg and wire(heartbeat())["cameras"] == ["cam-1", "cam-2"]
    assert [wire(m)["t"] for m in SAMPLES] == ["frame", "track_event", "track_event", "heartbeat"]


def test_event_types() -> None:
    assert EVENT_TYPES == ("track_started", "track_identified", "track_ended")


def test_int_is_accepted_for_float_and_normalised() -> None:
    body = wire(frame())
    body["capture_ts"] = 5
    out = decode(pack(body), LIMIT)
    assert out.capture_ts == 5.0 and type(out.capture_ts) is float
    assert type(TrackEvent("track_ended", "c", 1, None, None, None, 1, 2, [1, 2, 3, 4], None, 3, False).box[0]) is float


def test_schema_table_matches_dataclass_fields() -> None:
    for cls, specs in _SCHEMAS.items():
        assert [s.name for s in specs] == [f.name for f in dataclasses.fields(cls)]


def test_reasons_are_unique_labels() -> None:
    assert len(set(REASONS)) == len(REASONS) == 9
    assert all(isinstance(r, str) and r.isidentifier() for r in REASONS)


# ------------------------------------------------------------------------------------------------ messages in code
def test_messages_are_frozen_and_hashable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame().seq = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        merged().merged_visitor = None  # type: ignore[misc]
    assert hash(frame()) == hash(frame()) and hash(merged()) == hash(merged()) and merged() != event()


@pytest.mark.parametrize("make, reason, field", [
    (lambda: dataclasses.replace(frame(), seq=-1), "bad_value", "seq"),
    (lambda: dataclasses.replace(frame(), seq=True), "bad_type", "seq"),
    (lambda: dataclasses.replace(frame(), send_ts=math.nan), "bad_value", "send_ts"),
    (lambda: dataclasses.replace(frame(), jpeg=bytearray(b"x")), "bad_type", "jpeg"),
    (lambda: dataclasses.replace(frame(), capture_ts=10**400), "bad_value", "capture_ts"),
    (lambda: dataclasses.replace(event(), name=None), "bad_value", "name"),
    (lambda: dataclasses.replace(event(), type="track_ended", name=None, visitor=True), "bad_value", "visitor"),
    (lambda: dataclasses.replace(event(), box=(1.0, 2.0, 3.0)), "bad_value", "box"),
    (lambda: dataclasses.replace(event(), duration_s=-1.0), "bad_value", "duration_s"),
    (lambda: dataclasses.replace(event(), name="a\nb"), "bad_value", "name"),
    (lambda: dataclasses.replace(event(), type="track_updated"), "bad_value", "type"),
    (lambda: dataclasses.replace(event(), merged_visitor=""), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(event(), merged_visitor="a\nb"), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(event(), merged_visitor=3), "bad_type", "merged_visitor"),
    (lambda: dataclasses.replace(event(), worker="../w"), "bad_value", "worker"),
    (lambda: dataclasses.replace(event(), epoch=-1), "bad_value", "epoch"),
    (lambda: dataclasses.replace(event(), votes=0), "bad_value", "votes"),
    (lambda: dataclasses.replace(merged(), type="track_started"), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(merged(), type="track_ended"), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(merged(), type="track_ended", name=None), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(merged(), visitor=True), "bad_value", "merged_visitor"),
    (lambda: dataclasses.replace(merged(), name=None), "bad_value", "name"),
    (lambda: dataclasses.replace(heartbeat(), cameras=("a", "a")), "bad_value", "cameras"),
    (lambda: dataclasses.replace(heartbeat(), cameras="cam-1"), "bad_type", "cameras"),
    (lambda: dataclasses.replace(heartbeat(), credits=-1), "bad_value", "credits"),
])
def test_constructors_validate(make: Any, reason: str, field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        make()
    assert (info.value.reason, info.value.field) == (reason, field)
    assert repr(field) in str(info.value)


def test_to_json_dict() -> None:
    out = event().to_json_dict()
    assert list(out) == [f.name for f in dataclasses.fields(TrackEvent)]
    assert list(out)[-4:] == ["merged_visitor", "worker", "epoch", "votes"] and out["merged_visitor"] is None
    assert out["worker"] is None and out["epoch"] is None and out["votes"] is None
    assert out["box"] == [10.0, 20.0, 110.0, 140.0] and out["name"] == "alice"
    assert json.loads(json.dumps(out)) == out
    assert dataclasses.replace(event(), box=None).to_json_dict()["box"] is None
    out = merged().to_json_dict()
    assert out["merged_visitor"] == "visitor-3" and json.loads(json.dumps(out)) == out


def test_programmer_errors_are_not_protocol_errors() -> None:
    with pytest.raises(TypeError):
        encode({"v": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode("text", LIMIT)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        decode_as(dict, encode(frame()), LIMIT)  # type: ignore[type-var]
    with pytest.raises(ValueError):
        decode(encode(frame()), 0)


# ------------------------------------------------------------------------------------------------ each reason
def test_oversize_is_checked_before_unpacking() -> None:
    data = encode(frame())
    assert decode(data, len(data)) == frame()
    assert (reject(data, len(data) - 1).reason, reject(b"\xc1" * 100, 99).reason) == ("oversize", "oversize")
    assert reject(memoryview(b"\xc1" * 100), 99).field is None


@pytest.mark.parametrize("data", [b"", b"\xc1", encode(frame()) + b"\x00", encode(frame())[:-1], pack([1, 2]),
                                  pack("frame"), pack(None), pack({1: 2}), b"\xdd\xff\xff\xff\xff",
                                  b"\xc6\x7f\xff\xff\xff", b"\x91" * 5000, pack({"v": "x" * 5000}),
                                  pack({"v": msgpack.ExtType(1, b"abc")}), b"\xa2\xff\xfe"])
def test_malformed(data: bytes) -> None:
    err = reject(data)
    assert (err.reason, err.field) == ("malformed", None)


@pytest.mark.parametrize("version", [None, 1, 2, 3, 4, 6, 0, "5", 5.0, True, [5]])
def test_version(version: Any) -> None:
    body = wire(heartbeat())
    if version is None:
        del body["v"]
    else:
        body["v"] = version
    err = reject(pack(body))
    assert (err.reason, err.field) == ("version", "v")


def test_version_is_checked_before_fields() -> None:
    body = wire(heartbeat())
    body.update(v=1, new_field=1)
    del body["seq"]
    assert reject(pack(body)).reason == "version"


def _version_1(tag: str) -> dict[str, Any]:
    """A complete schema-1 message of type ``tag`` as an unpacked map."""
    if tag == "face_batch":  # a type that only schema 1 had
        return {"v": 1, "t": "face_batch", "camera_id": "cam-1", "seq": 7, "capture_ts": 1.0, "width": 640,
                "height": 480, "model": "arcface", "boxes": {"shape": [0, 4], "data": b""},
                "scores": {"shape": [0], "data": b""}, "landmarks": {"shape": [0, 5, 2], "data": b""},
                "embeddings": {"shape": [0, 0], "data": b""}}
    body = wire(event() if tag == "track_event" else frame())
    body["v"] = 1
    body.pop("merged_visitor", None)  # schema 1 had no merged_visitor
    return body


@pytest.mark.parametrize("tag", ["track_event", "face_batch", "frame"])
def test_version_1_messages_are_refused(tag: str) -> None:
    """A complete schema-1 message (a TrackEvent without merged_visitor, a FaceBatch, a Frame) is refused as a
    version mismatch, not as a missing field or an unknown type."""
    err = reject(pack(_version_1(tag)))
    assert (err.reason, err.field) == ("version", "v")
    assert f"schema version {SCHEMA_VERSION}" in str(err)


@pytest.mark.parametrize("tag", ["Frame", "nope", 3, None, b"frame", "face_batch"])
def test_unknown_type(tag: Any) -> None:
    body = wire(frame())
    body["t"] = tag
    err = reject(pack(body))
    assert (err.reason, err.field) == ("unknown_type", "t")


def test_unexpected_type() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_as(Frame, encode(heartbeat()), LIMIT)
    assert (info.value.reason, info.value.field) == ("unexpected_type", "t")
    assert "frame" in str(info.value) and "heartbeat" in str(info.value)


@pytest.mark.parametrize("msg, field", [(m, f.name) for m in SAMPLES for f in dataclasses.fields(m)]
                         + [(frame(), "t")])
def test_missing_field(msg: Any, field: str) -> None:
    body = wire(msg)
    del body[field]
    err = reject(pack(body))
    assert (err.reason, err.field) == ("missing_field", field)
    assert repr(field) in str(err)


@pytest.mark.parametrize("msg", SAMPLES)
def test_extra_field(msg: Any) -> None:
    body = wire(msg)
    body["bogus"] = 1
    err = reject(pack(body))
    assert (err.reason, err.field) == ("extra_field", "bogus")


@pytest.mark.parametrize("msg, field, value", [
    (frame(), "seq", True), (frame(), "seq", 1.0), (frame(), "width", "640"), (frame(), "camera_id", 5),
    (frame(), "capture_ts", "now"), (frame(), "capture_ts", False), (frame(), "jpeg", "jpeg"),
    (event(), "merged_visitor", 5), (event(), "merged_visitor", b"visitor-1"), (event(), "merged_visitor", False),
    (event(), "merged_visitor", ["visitor-1"]), (event(), "visitor", 0), (event(), "name", 5),
    (event(), "box", "1,2,3,4"), (event(), "box", [1, 2, 3, "4"]),
    (event(), "similarity", "0.9"), (event(), "type", 1), (heartbeat(), "cameras", "cam-1"),
    (heartbeat(), "cameras", ["cam-1", 2]), (heartbeat(), "credits", None), (heartbeat(), "role", None),
])
def test_bad_type(msg: Any, field: str, value: Any) -> None:
    body = wire(msg)
    body[field] = value
    err = reject(pack(body))
    assert (err.reason, err.field) == ("bad_type", field)
    assert repr(field) in str(err) and "expected" in str(err)


@pytest.mark.parametrize("msg, field, value", [
    (frame(), "capture_ts", math.nan), (frame(), "send_ts", math.inf), (frame(), "seq", -1),
    (frame(), "seq", 2**63), (frame(), "width", 0), (frame(), "height", 16385), (frame(), "camera_id", ""),
    (frame(), "camera_id", "cam 1"), (frame(), "camera_id", "c" * 65), (frame(), "jpeg", b""),
    (frame(), "camera_id", ".."), (frame(), "camera_id", ".hidden"), (frame(), "camera_id", "-rf"),
    (heartbeat(), "sender", ".."), (heartbeat(), "cameras", ["a", "../etc"]),
    (event(), "type", "track_lost"), (event(), "type", "track_updated"), (event(), "merged_visitor", ""),
    (event(), "merged_visitor", "v" * 257), (event(), "merged_visitor", "visitor-\x001"),
    (event(), "time_to_name_ms", -0.5), (event(), "box", [1, 2, 3]),
    (event(), "box", [1, 2, 3, math.nan]), (event(), "name", ""), (event(), "name", None),
    (heartbeat(), "role", "boss"), (heartbeat(), "credits", -1), (heartbeat(), "cameras", ["a", "a"]),
    (heartbeat(), "ts", -math.inf),
])
def test_bad_value(msg: Any, field: str, value: Any) -> None:
    body = wire(msg)
    body[field] = value
    err = reject(pack(body))
    assert (err.reason, err.field) == ("bad_value", field)
    assert repr(field) in str(err) and "expected" in str(err)


@pytest.mark.parametrize("changes, field", [
    ({"type": "track_started"}, "merged_visitor"), ({"type": "track_ended"}, "merged_visitor"),
    ({"type": "track_ended", "name": None}, "merged_visitor"), ({"visitor": True}, "merged_visitor"),
    ({"name": None}, "name"),
])
def test_merged_visitor_cross_field_rule_on_the_wire(changes: dict[str, Any], field: str) -> None:
    """merged_visitor only on a track_identified event, of an enrolled person (visitor False, name set)."""
    body = wire(merged())
    body.update(changes)
    err = reject(pack(body))
    assert (err.reason, err.field) == ("bad_value", field)
    assert repr(field) in str(err) and "expected" in str(err)


# ------------------------------------------------------------------------------------------------ garbage
@GARBAGE
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    decode_or_error(data)


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20)
field_names = st.sampled_from(sorted({f.name for m in SAMPLES for f in dataclasses.fields(m)} | {"v", "t"}))


@GARBAGE
@given(msgpack_values)
def test_random_msgpack_objects(obj: Any) -> None:
    decode_or_error(pack(obj))


@GARBAGE
@given(messages, field_names, msgpack_values)
def test_random_field_values(msg: Any, field: str, value: Any) -> None:
    body = wire(msg)
    body[field] = value
    decode_or_error(pack(body))


@GARBAGE
@given(messages, st.data())
def test_mutated_encodings(msg: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(msg))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "drop_field", "extra", "version"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
    elif kind == "truncate":
        del raw[data.draw(st.integers(0, len(raw) - 1)):]
    elif kind == "insert":
        raw[data.draw(st.integers(0, len(raw))):0] = data.draw(st.binary(min_size=1, max_size=4))
    else:
        body = wire(msg)
        if kind == "drop_field":
            del body[data.draw(st.sampled_from(sorted(body)))]
        elif kind == "extra":
            body[data.draw(st.text(max_size=12))] = data.draw(msgpack_values)
        else:
            body["v"] = data.draw(msgpack_values)
        raw = bytearray(pack(body))
    decode_or_error(bytes(raw))
