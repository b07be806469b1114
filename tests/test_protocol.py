"""Tests of the msgpack wire protocol: round trips, strict rejection with the right reason and field, and
property tests that garbage only ever yields a valid message or a ProtocolError."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from shared.errors import ProtocolError
from shared.ids import ID_PATTERN
from shared.protocol import (EVENT_TYPES, MAX_SEQ, REASONS, ROLES, SCHEMA_VERSION, FaceBatch, Frame, Heartbeat,
                             TrackEvent, _SCHEMAS, decode, decode_as, encode)

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
f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
nonneg = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False)


def arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, shape, elements=f32)


frames = st.builds(Frame, camera_id=ids, seq=seqs, capture_ts=times, send_ts=times, width=sides, height=sides,
                   jpeg=st.binary(min_size=1, max_size=64))


@st.composite
def face_batches(draw: st.DrawFn) -> FaceBatch:
    n = draw(st.integers(0, 4))
    d = draw(st.sampled_from([0, 1, 3, 8]))
    return FaceBatch(draw(ids), draw(seqs), draw(times), draw(sides), draw(sides), draw(texts),
                     draw(arrays((n, 4))), draw(arrays((n,))), draw(arrays((n, 5, 2))), draw(arrays((n, d))))


@st.composite
def track_events(draw: st.DrawFn) -> TrackEvent:
    kind = draw(st.sampled_from(EVENT_TYPES))
    name = draw(texts) if kind == "track_identified" else draw(st.none() | texts)
    visitor = draw(st.booleans()) if name is not None else False
    box = draw(st.none() | st.tuples(times, times, times, times))
    return TrackEvent(kind, draw(ids), draw(seqs), name, draw(st.none() | times), draw(st.none() | times),
                      draw(times), draw(times), box, draw(st.none() | nonneg), draw(st.none() | nonneg), visitor)


heartbeats = st.builds(Heartbeat, sender=ids, role=st.sampled_from(ROLES), seq=seqs, ts=times,
                       credits=st.integers(0, 2**31 - 1), cameras=st.lists(ids, max_size=5, unique=True).map(tuple))
messages = st.one_of(frames, face_batches(), track_events(), heartbeats)


def frame() -> Frame:
    return Frame("cam-1", 7, 1700000000.25, 1700000000.5, 640, 480, b"\xff\xd8\xff\xe0jpeg")


def batch(n: int = 2, d: int = 3) -> FaceBatch:
    rng = np.random.default_rng(0)
    return FaceBatch("cam-1", 7, 1700000000.25, 640, 480, "arcface_w600k_r50",
                     rng.random((n, 4), dtype=np.float32), rng.random(n, dtype=np.float32),
                     rng.random((n, 5, 2), dtype=np.float32), rng.random((n, d), dtype=np.float32))


def event() -> TrackEvent:
    return TrackEvent("track_identified", "cam-1", 3, "alice", 0.91, 0.12, 1700000001.0, 1700000000.25,
                      (10.0, 20.0, 110.0, 140.0), 350.0, 1.5, False)


def heartbeat() -> Heartbeat:
    return Heartbeat("worker-0", "worker", 12, 1700000000.0, 4, ("cam-1", "cam-2"))


SAMPLES = [frame(), batch(), event(), heartbeat()]


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
    assert isinstance(msg, (Frame, FaceBatch, TrackEvent, Heartbeat))
    assert decode(encode(msg), LIMIT) == msg


# ------------------------------------------------------------------------------------------------ round trips
@FAST
@given(frames)
def test_frame_round_trip(msg: Frame) -> None:
    assert decode_as(Frame, encode(msg), LIMIT) == msg


@FAST
@given(face_batches())
def test_face_batch_round_trip(msg: FaceBatch) -> None:
    out = decode_as(FaceBatch, encode(msg), LIMIT)
    assert out == msg
    for name in ("boxes", "scores", "landmarks", "embeddings"):
        got, want = getattr(out, name), getattr(msg, name)
        assert got.dtype == np.float32 and got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bit-exact, -0.0 included


@FAST
@given(track_events())
def test_track_event_round_trip(msg: TrackEvent) -> None:
    assert decode_as(TrackEvent, encode(msg), LIMIT) == msg


@FAST
@given(heartbeats)
def test_heartbeat_round_trip(msg: Heartbeat) -> None:
    assert decode(encode(msg), LIMIT) == msg


def test_envelope_and_types_on_the_wire() -> None:
    body = wire(batch(n=2, d=3))
    assert body["v"] == SCHEMA_VERSION and body["t"] == "face_batch"
    assert body["embeddings"]["shape"] == [2, 3] and len(body["embeddings"]["data"]) == 24
    assert np.frombuffer(body["boxes"]["data"], "<f4").tolist() == batch().boxes.ravel().tolist()
    assert [wire(m)["t"] for m in SAMPLES] == ["frame", "face_batch", "track_event", "heartbeat"]


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
def test_face_batch_arrays_are_frozen_copies() -> None:
    boxes = np.zeros((1, 4), np.float32)
    msg = FaceBatch("c", 0, 0.0, 10, 10, "m", boxes, np.zeros(1, np.float32), np.zeros((1, 5, 2), np.float32),
                    np.zeros((1, 0), np.float32))
    boxes[0, 0] = 5.0
    assert msg.boxes[0, 0] == 0.0 and not msg.boxes.flags.writeable
    with pytest.raises(ValueError):
        msg.boxes[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.seq = 1  # type: ignore[misc]
    assert msg != batch() and msg == msg and hash(frame()) == hash(frame())


def test_face_batch_accepts_big_endian_float32() -> None:
    b = batch()
    msg = dataclasses.replace(b, boxes=b.boxes.astype(">f4"))
    assert msg.boxes.dtype == np.dtype("<f4") and msg == b


@pytest.mark.parametrize("make, reason, field", [
    (lambda: dataclasses.replace(frame(), seq=-1), "bad_value", "seq"),
    (lambda: dataclasses.replace(frame(), seq=True), "bad_type", "seq"),
    (lambda: dataclasses.replace(frame(), send_ts=math.nan), "bad_value", "send_ts"),
    (lambda: dataclasses.replace(frame(), jpeg=bytearray(b"x")), "bad_type", "jpeg"),
    (lambda: dataclasses.replace(frame(), capture_ts=10**400), "bad_value", "capture_ts"),
    (lambda: dataclasses.replace(batch(), boxes=np.zeros((2, 4))), "bad_type", "boxes"),
    (lambda: dataclasses.replace(batch(), boxes=[[0.0] * 4] * 2), "bad_type", "boxes"),
    (lambda: dataclasses.replace(batch(), landmarks=np.zeros((2, 4, 2), np.float32)), "bad_value", "landmarks"),
    (lambda: dataclasses.replace(batch(), scores=np.zeros(3, np.float32)), "bad_value", "scores"),
    (lambda: dataclasses.replace(batch(), embeddings=np.zeros((1, 3), np.float32)), "bad_value", "embeddings"),
    (lambda: dataclasses.replace(batch(), boxes=np.full((2, 4), np.inf, np.float32)), "bad_value", "boxes"),
    (lambda: dataclasses.replace(batch(), model=""), "bad_value", "model"),
    (lambda: dataclasses.replace(event(), name=None), "bad_value", "name"),
    (lambda: dataclasses.replace(event(), type="track_ended", name=None, visitor=True), "bad_value", "visitor"),
    (lambda: dataclasses.replace(event(), box=(1.0, 2.0, 3.0)), "bad_value", "box"),
    (lambda: dataclasses.replace(event(), duration_s=-1.0), "bad_value", "duration_s"),
    (lambda: dataclasses.replace(event(), name="a\nb"), "bad_value", "name"),
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
    assert out["box"] == [10.0, 20.0, 110.0, 140.0] and out["name"] == "alice"
    assert json.loads(json.dumps(out)) == out
    assert dataclasses.replace(event(), box=None).to_json_dict()["box"] is None


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


@pytest.mark.parametrize("version", [None, 2, 0, "1", 1.0, True, [1]])
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
    body.update(v=2, new_field=1)
    del body["seq"]
    assert reject(pack(body)).reason == "version"


@pytest.mark.parametrize("tag", ["Frame", "nope", 3, None, b"frame"])
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
    (batch(), "boxes", [[0, 0, 1, 1]] * 2), (batch(), "scores", {"shape": [2], "data": "xxxxxxxx"}),
    (batch(), "scores", {"shape": [2.0], "data": b"\0" * 8}), (batch(), "scores", {"shape": [2]}),
    (batch(), "scores", {"shape": [2], "data": b"\0" * 8, "dtype": "f4"}), (batch(), "model", None),
    (event(), "visitor", 0), (event(), "name", 5), (event(), "box", "1,2,3,4"), (event(), "box", [1, 2, 3, "4"]),
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
    (batch(), "scores", {"shape": [2], "data": b"\0" * 7}), (batch(), "scores", {"shape": [3], "data": b"\0" * 12}),
    (batch(), "scores", {"shape": [2, 1], "data": b"\0" * 8}),
    (batch(), "boxes", {"shape": [2, 3], "data": b"\0" * 24}),
    (batch(), "scores", {"shape": [-2], "data": b""}), (batch(), "embeddings", {"shape": [0, 2**40], "data": b""}),
    (batch(), "scores", {"shape": [2], "data": np.array([0, np.nan], "<f4").tobytes()}),
    (batch(), "embeddings", {"shape": [2, 5000], "data": b"\0" * 40000}),
    (event(), "type", "track_lost"), (event(), "time_to_name_ms", -0.5), (event(), "box", [1, 2, 3]),
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
